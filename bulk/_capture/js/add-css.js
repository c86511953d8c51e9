// The css step of a capture script: the CSS as one more style sheet of the document
// (adopted, so a Content-Security-Policy against inline styles does not stop it).
(css) => {
  const sheet = new CSSStyleSheet();
  sheet.replaceSync(css);
  document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
}
