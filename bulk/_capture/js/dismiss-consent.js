// Known consent managers' accept buttons, then "Accept all"-like buttons inside
// something that calls itself cookie/consent/privacy. Polls a short while, since
// consent managers usually inject their banner after load.
async (pollMs) => {
  const selectors = [
    '#onetrust-accept-btn-handler', '#accept-recommended-btn-handler',
    '#CybotCookiebotDialogBodyLevelButtonLevelOptinAllowAll',
    '#CybotCookiebotDialogBodyButtonAccept', '#didomi-notice-agree-button',
    '#truste-consent-button', '.qc-cmp2-summary-buttons button[mode="primary"]',
    '[data-testid="uc-accept-all-button"]', '.cky-btn-accept', '.cmplz-accept',
    '[data-tid="banner-accept"]', '.osano-cm-accept-all', '.cc-allow', '.cc-dismiss',
    '#cookie-accept', '#accept-cookies', '.js-cookie-accept', '[data-cookie-accept]',
    '#gdpr-cookie-accept', '.iubenda-cs-accept-btn', '#hs-eu-confirmation-button',
  ];
  const containers = [
    '#onetrust-consent-sdk', '#onetrust-banner-sdk', '#CybotCookiebotDialog', '#didomi-host',
    '#truste-consent-track', '.qc-cmp2-container', '#usercentrics-root', '.cky-consent-container',
    '.cmplz-cookiebanner', '.osano-cm-window', '.cc-window', '#iubenda-cs-banner',
    '#hs-eu-cookie-confirmation',
  ];
  const visible = (el) => {
    const r = el.getBoundingClientRect();
    const s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none';
  };
  const roots = () => {
    const out = [document];
    for (const el of document.querySelectorAll('*')) if (el.shadowRoot) out.push(el.shadowRoot);
    return out;
  };
  const words = /^\s*(accept all( cookies)?|accept( cookies)?|allow all( cookies)?|allow cookies|i agree|agree|agree and (close|continue)|got it|ok|okay|i understand)\s*[.!]?\s*$/i;
  const near = /cookie|consent|gdpr|privacy|cmp/i;
  const attempt = () => {
    let clicked = 0;
    for (const root of roots()) for (const sel of selectors) {
      for (const el of root.querySelectorAll(sel)) {
        if (visible(el)) { el.click(); clicked++; break; }
      }
    }
    if (clicked) return clicked;
    for (const root of roots()) {
      for (const el of root.querySelectorAll('button, a, [role="button"], input[type="button"], input[type="submit"]')) {
        const text = (el.innerText || el.value || '').trim();
        if (!words.test(text) || !visible(el)) continue;
        let node = el, hit = false;
        for (let i = 0; node && i < 8; i++, node = node.parentElement) {
          const label = node.getAttribute ? (node.getAttribute('aria-label') || '') : '';
          const cls = typeof node.className === 'string' ? node.className : '';
          if (near.test((node.id || '') + ' ' + cls + ' ' + label)) { hit = true; break; }
        }
        if (hit) { el.click(); return 1; }
      }
    }
    return 0;
  };
  const sleep = (ms) => new Promise(r => setTimeout(r, ms));
  const start = performance.now();
  let clicked = attempt();
  while (!clicked && performance.now() - start < pollMs) { await sleep(100); clicked = attempt(); }
  if (clicked) await sleep(300);  // banners animate away
  // Whatever a known consent manager still shows after the click is hidden.
  const sheet = new CSSStyleSheet();
  for (const sel of containers) sheet.insertRule(sel + ' { display: none !important; }', 0);
  if (clicked) document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
  return clicked;
}
