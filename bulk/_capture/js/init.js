// Runs first in every new document of a job's context.
(() => {
  // Dialogs never show in a screenshot, and answering each one through the protocol
  // costs a round trip: a page looping on alert() would flood it. Answers are the ones
  // a dismissed dialog gives.
  const quiet = {
    alert() {}, confirm() { return false; }, prompt() { return null; }, print() {},
  };
  for (const [name, fn] of Object.entries(quiet)) {
    try { Object.defineProperty(window, name, {value: fn, writable: true, configurable: true}); }
    catch (e) {}
  }
  // Scrollbars take no room in an image: --hide-scrollbars hides the classic ones, but
  // a page that styles its own (::-webkit-scrollbar) or reserves their gutter
  // (scrollbar-gutter: stable) would leave an empty strip at the right edge. The sheet
  // is adopted before the page's first style pass, so it costs no second one; settle.js
  // adopts it again (through the hook) if the page replaced the adopted sheets.
  try {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(
      'html, body { scrollbar-gutter: auto !important; }\n' +
      '* { scrollbar-width: none !important; }\n' +
      '::-webkit-scrollbar { display: none !important; width: 0 !important; height: 0 !important; }'
    );
    const adopt = () => {
      if (!document.adoptedStyleSheets.includes(sheet)) {
        document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
      }
    };
    adopt();
    Object.defineProperty(window, Symbol.for('bulk.pageStyle'), {value: adopt});
  } catch (e) {}
})();
