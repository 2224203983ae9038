// Prometheus' text exposition format, as /metrics serves it, parsed into samples.

// "name{a=\"x\",b=\"y\"} 1.5" -> { name, labels: {a: "x", b: "y"}, value: 1.5 }
export function parsePrometheus(text) {
  const samples = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    samples.push({ name: match[1], labels: parseLabels(match[3] || ""), value: parseValue(match[4]) });
  }
  return samples;
}

function parseValue(text) {
  if (text === "+Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  return Number(text);
}

function parseLabels(text) {
  const labels = {};
  const pattern = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  let match;
  while ((match = pattern.exec(text))) {
    labels[match[1]] = match[2].replace(/\\n/g, "\n").replace(/\\(["\\])/g, "$1");
  }
  return labels;
}

// The one value of an unlabelled sample (a counter's _total, a gauge), or undefined.
export function sampleValue(samples, name) {
  const found = samples.find((s) => s.name === name && Object.keys(s.labels).length === 0);
  return found ? found.value : undefined;
}

// A histogram's cumulative buckets, its count and sum.
export function histogram(samples, name) {
  const buckets = samples
    .filter((s) => s.name === `${name}_bucket`)
    .map((s) => ({ le: parseValue(s.labels.le), count: s.value }))
    .sort((a, b) => a.le - b.le);
  return {
    buckets,
    count: sampleValue(samples, `${name}_count`) || 0,
    sum: sampleValue(samples, `${name}_sum`) || 0,
  };
}
