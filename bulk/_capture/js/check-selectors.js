// Which of the job's CSS selectors does not parse: '' when all do, else 'field: selector'
// of the first that does not (checked once per job, before any navigation).
(selectors) => {
  for (const [field, sel] of selectors) {
    try { document.createDocumentFragment().querySelector(sel); }
    catch (e) { return field + ': ' + sel; }
  }
  return '';
}
