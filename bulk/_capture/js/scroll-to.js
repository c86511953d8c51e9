// The scroll step of a capture script, to a y position: scrolls, then waits two frames
// so what scrolling triggers (lazy images, sticky headers) has been laid out.
async (y) => {
  window.scrollTo(0, y);
  const sleep = (ms) => new Promise(r => setTimeout(r, ms));
  await Promise.race([new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))), sleep(300)]);
  return window.scrollY;
}
