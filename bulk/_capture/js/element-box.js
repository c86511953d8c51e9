// The element's box in document coordinates, scrolled into view first when it is not.
async (el) => {
  const inside = (r) => r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth;
  if (!inside(el.getBoundingClientRect())) {
    el.scrollIntoView({block: 'nearest', inline: 'nearest'});
    await Promise.race([new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))), new Promise(r => setTimeout(r, 300))]);
  }
  const r = el.getBoundingClientRect();
  return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height, fits: inside(r)};
}
