// The only script of the page: the import's upload shows its progress. Everything else is
// plain HTML forms and links, which work without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("upload");
  const bar = document.getElementById("upload-progress");
  if (!form || !bar || !window.XMLHttpRequest) return;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const request = new XMLHttpRequest();
    request.open("POST", form.action);
    bar.hidden = false;
    request.upload.addEventListener("progress", (progress) => {
      if (progress.lengthComputable) bar.value = (100 * progress.loaded) / progress.total;
    });
    request.addEventListener("load", () => {
      window.location.assign(request.responseURL);
    });
    request.addEventListener("error", () => {
      bar.hidden = true;
      form.submit();
    });
    request.send(new FormData(form));
  });
});
