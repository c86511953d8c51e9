// Scroll down in viewport steps so lazy images and infinite lists load, give started
// image loads a moment (at most imagesMs), then back up. Bounded by a pixel cap and a
// time budget: an infinite page ends at the cap, it does not hang. Returns the page's
// height, which may be over the cap (the image is then cut at the cap).
async ([maxHeight, budgetMs, imagesMs]) => {
  const start = performance.now();
  const left = () => budgetMs - (performance.now() - start);
  const sleep = (ms) => new Promise(r => setTimeout(r, ms));
  const frame = () => Promise.race([new Promise(r => requestAnimationFrame(() => r())), sleep(100)]);
  const height = () => Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0);
  const step = Math.max(200, Math.floor(window.innerHeight * 0.9));
  let y = 0;
  while (left() > 0) {
    const bottom = Math.min(height(), maxHeight);
    if (y + window.innerHeight >= bottom) {
      if (bottom >= maxHeight) break;
      // At the bottom: an infinite list appends more after a frame or a fetch.
      const before = height();
      const waited = performance.now();
      while (height() <= before && performance.now() - waited < 300 && left() > 0) await sleep(50);
      if (height() <= before) break;
      continue;
    }
    y += step;
    window.scrollTo(0, y);
    await frame();
    await sleep(50);
  }
  const imagesBudget = Math.min(imagesMs, left());
  const imagesStart = performance.now();
  // Images in the captured area that started loading (lazy ones outside it never will).
  const loading = () => Array.from(document.images).some(i => {
    if (i.complete) return false;
    const r = i.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && r.right > 0 && r.left < innerWidth && r.top + scrollY < maxHeight;
  });
  while (loading() && performance.now() - imagesStart < imagesBudget) await sleep(50);
  window.scrollTo(0, 0);
  await frame();
  await frame();
  return height();
}
