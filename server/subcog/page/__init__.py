"""The web page: browse, search and forget memories in a browser (`subcog ui`, and `/` beside
`/mcp` on the HTTP transport). Server-rendered HTML; a few lines of JavaScript add the upload's
progress bar. access.py decides who may look; app.py answers the requests."""
