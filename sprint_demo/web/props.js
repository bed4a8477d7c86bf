// The numbers Python passes in as the component's props (from sprint_demo/settings.py): written once there, never
// copied here. A missing or non-numeric one is a wiring mistake, so it fails loudly.
function isNumber(value) {
  return typeof value === 'number' ? Number.isFinite(value) : typeof value === 'string' && value.trim() !== '' &&
    Number.isFinite(Number(value));
}

function requiredNumber(props, name) {
  if (!isNumber(props[name])) {
    throw new Error('the component needs a number for its prop "' + name + '", got ' + JSON.stringify(props[name]));
  }
  return Number(props[name]);
}

function requiredNumbers(props, name) {
  const values = props[name];
  if (!Array.isArray(values) || values.length === 0 || !values.every(isNumber)) {
    throw new Error('the component needs a list of numbers for its prop "' + name + '", got ' +
                    JSON.stringify(values));
  }
  return values.map(Number);
}
