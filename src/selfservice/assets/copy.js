// The copy button of the page that shows a new app password once. The page
// works without it: the password is plain text in #new-password.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var button = document.getElementById("copy");
  var secret = document.getElementById("new-password");
  if (!button || !secret) {
    return;
  }
  button.hidden = false;
  function select() {
    var range = document.createRange();
    range.selectNodeContents(secret);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
  function done(text) {
    button.textContent = text;
    window.setTimeout(function () {
      button.textContent = "Copy";
    }, 2000);
  }
  button.addEventListener("click", function () {
    var text = secret.textContent;
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () { done("Copied"); },
        function () { select(); done("Press Ctrl+C"); }
      );
    } else {
      select();
      done("Press Ctrl+C");
    }
  });
});
