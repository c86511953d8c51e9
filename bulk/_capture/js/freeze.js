// The freeze_animations option, right before an image is taken: transitions end at
// once, CSS animations jump to their end (an endless one stops at its first frame),
// and text carets do not blink, so two captures of one page are the same image.
() => {
  if (!window.__bulkFrozen) {
    window.__bulkFrozen = true;
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(
      '*, *::before, *::after { transition-duration: 0s !important; ' +
      'transition-delay: 0s !important; caret-color: transparent !important; }'
    );
    document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
  }
  let n = 0;
  for (const animation of document.getAnimations()) {
    try {
      animation.finish();
    } catch (e) {
      // Endless: finish() throws; its first frame is what it looks like at rest.
      try { animation.pause(); animation.currentTime = 0; } catch (e2) {}
    }
    n++;
  }
  return n;
}
