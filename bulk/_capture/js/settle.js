// After load: web fonts, then two frames, so what is painted is what was laid out.
async () => {
  const sleep = (ms) => new Promise(r => setTimeout(r, ms));
  try { await Promise.race([document.fonts.ready, sleep(1000)]); } catch (e) {}
  await Promise.race([new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))), sleep(300)]);
}
