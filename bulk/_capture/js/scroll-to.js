// The scroll step of a capture script, to a y position (null: the element was scrolled
// into view already): scrolls, then waits two frames so what scrolling triggers (scroll
// listeners, lazy images, sticky headers) has run and been laid out.
async (y) => {
  if (y !== null) window.scrollTo(0, y);
  const sleep = (ms) => new Promise(r => setTimeout(r, ms));
  await Promise.race([new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))), sleep(300)]);
  return window.scrollY;
}
