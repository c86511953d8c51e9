// Scrollbars take no room in an image: --hide-scrollbars hides the classic ones, but a
// page that styles its own (::-webkit-scrollbar) or reserves their gutter
// (scrollbar-gutter: stable) would leave an empty strip at the right edge.
() => {
  const sheet = new CSSStyleSheet();
  sheet.replaceSync(
    'html, body { scrollbar-gutter: auto !important; }\n' +
    '* { scrollbar-width: none !important; }\n' +
    '::-webkit-scrollbar { display: none !important; width: 0 !important; height: 0 !important; }'
  );
  document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
}
