// The block_selectors option: whatever they match is hidden, in one adopted style sheet.
(selectors) => {
  const sheet = new CSSStyleSheet();
  for (const sel of selectors) sheet.insertRule(sel + ' { display: none !important; }', sheet.cssRules.length);
  document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
}
