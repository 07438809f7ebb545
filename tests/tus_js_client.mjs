// Drives tus-js-client (the official browser/Node client) against a tus endpoint.
// node tests/tus_js_client.mjs parallel|resume ENDPOINT FILE [URL_STORAGE]
// Prints one JSON line: {"url": ..., ...}.
import { readFileSync } from "node:fs";
import { FileUrlStorage, Upload } from "tus-js-client";

const [mode, endpoint, file, storagePath] = process.argv.slice(2);
const data = readFileSync(file);
const retryDelays = [100, 300, 1000, 2000];

function run(options, onStarted) {
  return new Promise((resolve, reject) => {
    const upload = new Upload(data, {
      endpoint,
      retryDelays,
      metadata: { filename: "js.bin", filetype: "application/octet-stream" },
      ...options,
      onError: reject,
      onSuccess: () => resolve(upload),
    });
    if (onStarted) onStarted(upload, resolve);
    else upload.start();
  });
}

if (mode === "parallel") {
  const upload = await run({ parallelUploads: 3, chunkSize: 100_003 });
  console.log(JSON.stringify({ url: upload.url }));
} else if (mode === "resume") {
  const urlStorage = new FileUrlStorage(storagePath);
  const half = Math.floor(data.length / 2);
  let abortedAt = 0;
  // First run: aborted once half the bytes are sent, as a closed tab would be.
  await run({ chunkSize: 65_537, urlStorage, removeFingerprintOnSuccess: true }, (upload, done) => {
    upload.options.onProgress = (sent) => {
      if (sent >= half && !abortedAt) {
        abortedAt = sent;
        upload.abort().then(() => done(upload));
      }
    };
    upload.start();
  });
  let previousCount = 0;
  const upload = await run({ chunkSize: 65_537, urlStorage }, (upload) => {
    upload.findPreviousUploads().then((previous) => {
      previousCount = previous.length;
      if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
      upload.start();
    });
  });
  console.log(JSON.stringify({ url: upload.url, previousCount, abortedAt }));
} else {
  throw new Error(`unknown mode ${mode}`);
}
