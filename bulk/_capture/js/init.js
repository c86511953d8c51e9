// Dialogs never show in a screenshot, and answering each one through the protocol
// costs a round trip: a page looping on alert() would flood it. Answers are the ones
// a dismissed dialog gives.
(() => {
  const quiet = {
    alert() {}, confirm() { return false; }, prompt() { return null; }, print() {},
  };
  for (const [name, fn] of Object.entries(quiet)) {
    try { Object.defineProperty(window, name, {value: fn, writable: true, configurable: true}); }
    catch (e) {}
  }
})();
