// After load: web fonts, then two frames, so what is painted is what was laid out.
// The page style of init.js is adopted again first if the page replaced the adopted
// sheets (or the document was written by document.open/write), so one call does both.
async () => {
  const sleep = (ms) => new Promise(r => setTimeout(r, ms));
  const adopt = window[Symbol.for('bulk.pageStyle')];
  if (typeof adopt === 'function') adopt();
  try { await Promise.race([document.fonts.ready, sleep(1000)]); } catch (e) {}
  await Promise.race([new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))), sleep(300)]);
}
