#!/usr/bin/env node
// A real Node webhook receiver that checks our three signatures for a list of cases.
//
// Usage: node verify.js CASES.json   (or no argument / "-" to read the cases from stdin)
// CASES.json: [{"id": "...", "apiKey": "...", "bodyBase64": "...", "headers": {...},
//               "originalBase64": "..." (optional: the dataset JSON as the customer sent it)}, ...]
//
// It starts two Express apps on 127.0.0.1 (ephemeral ports) and POSTs every case's body, byte
// for byte, with its headers, through Node's http client:
//   * the seed's handler, verbatim: app.use(express.json()), then
//     createHmac('sha256', apiKey).update(JSON.stringify(payload)).digest('hex') === hmacSignature
//     answering 401 'Invalid signature' or 200 'OK';
//   * a raw-body receiver (express.raw()) that checks the SHA256-HMAC-Signature header (hex HMAC
//     of the raw body) and the Standard Webhooks headers with the npm "standardwebhooks" package,
//     built from the API key the way our docs tell customers:
//     new Webhook(Buffer.from(apiKey, 'utf8').toString('base64')).
// It prints one JSON array: per case {id, seed, seedStatus, seedStringified, header,
// standardWebhooks, standardWebhooksError, direct, originalStringified}; "direct" repeats the
// seed check in-process with JSON.parse on the raw body, to tell a parsing difference from a
// transport one; "originalStringified" is JSON.stringify(JSON.parse(original)), to show that the
// echoed payload is, for JavaScript, the very value the customer submitted.
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const http = require("http");
const express = require("express");
const { Webhook } = require("standardwebhooks");

function readCases() {
  const arg = process.argv[2];
  const text = !arg || arg === "-" ? fs.readFileSync(0, "utf8") : fs.readFileSync(arg, "utf8");
  const cases = JSON.parse(text);
  if (!Array.isArray(cases)) throw new Error("the cases file must hold a JSON array");
  return cases;
}

function hmacHex(key, data) {
  return crypto.createHmac("sha256", key).update(data).digest("hex");
}

function listen(app) {
  return new Promise((resolve, reject) => {
    const server = app.listen(0, "127.0.0.1", () => resolve(server));
    server.on("error", reject);
  });
}

function post(agent, port, path, body, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        path,
        method: "POST",
        agent,
        headers: { ...headers, "content-length": String(body.length) },
      },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString("utf8") }),
        );
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

async function main() {
  const cases = readCases();
  // What each handler saw, keyed by the x-case header this harness adds (not part of the seed).
  const seen = new Map();
  const current = (req) => {
    const key = req.headers["x-case"];
    if (!seen.has(key)) seen.set(key, {});
    return seen.get(key);
  };
  const apiKeyOf = (req) => cases[Number(req.headers["x-case"])].apiKey;

  // The seed's handler, as in the public docs (only the key comes from the case).
  const seedApp = express();
  seedApp.use(express.json());
  seedApp.post("/webhook/dataset-export", (req, res) => {
    const { hmacSignature, payload } = req.body;
    const stringified = JSON.stringify(payload);
    current(req).seedStringified = stringified;

    const hmac = crypto.createHmac("sha256", apiKeyOf(req));
    hmac.update(JSON.stringify(payload));
    const expectedSignature = hmac.digest("hex");

    if (expectedSignature !== hmacSignature) {
      return res.status(401).send("Invalid signature");
    }
    res.status(200).send("OK");
  });

  // Raw-body checks: the header HMAC and Standard Webhooks.
  const rawApp = express();
  rawApp.use(express.raw({ type: () => true, limit: "50mb" }));
  rawApp.post("/webhook/raw", (req, res) => {
    const apiKey = apiKeyOf(req);
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const result = current(req);
    const claimed = req.headers["sha256-hmac-signature"] || "";
    result.header = claimed === hmacHex(apiKey, body);
    try {
      new Webhook(Buffer.from(apiKey, "utf8").toString("base64")).verify(body, req.headers);
      result.standardWebhooks = true;
      result.standardWebhooksError = null;
    } catch (err) {
      result.standardWebhooks = false;
      result.standardWebhooksError = String(err && err.message ? err.message : err);
    }
    res.status(result.header && result.standardWebhooks ? 200 : 401).send("");
  });

  const seedServer = await listen(seedApp);
  const rawServer = await listen(rawApp);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const results = [];
  try {
    for (let i = 0; i < cases.length; i++) {
      const c = cases[i];
      const body = Buffer.from(c.bodyBase64, "base64");
      const headers = { "content-type": "application/json", ...c.headers, "x-case": String(i) };
      const seedRes = await post(agent, seedServer.address().port, "/webhook/dataset-export", body, headers);
      const rawRes = await post(agent, rawServer.address().port, "/webhook/raw", body, headers);
      const r = seen.get(String(i)) || {};

      let direct = false;
      let directError = null;
      try {
        const parsed = JSON.parse(body.toString("utf8"));
        direct = hmacHex(c.apiKey, JSON.stringify(parsed.payload)) === parsed.hmacSignature;
      } catch (err) {
        directError = String(err && err.message ? err.message : err);
      }

      let originalStringified = null;
      if (c.originalBase64 !== undefined) {
        originalStringified = JSON.stringify(
          JSON.parse(Buffer.from(c.originalBase64, "base64").toString("utf8")),
        );
      }

      results.push({
        id: c.id === undefined ? i : c.id,
        seed: seedRes.status === 200,
        seedStatus: seedRes.status,
        seedStringified: r.seedStringified === undefined ? null : r.seedStringified,
        header: r.header === true,
        standardWebhooks: r.standardWebhooks === true,
        standardWebhooksError: r.standardWebhooksError === undefined ? null : r.standardWebhooksError,
        rawStatus: rawRes.status,
        direct,
        directError,
        originalStringified,
      });
    }
  } finally {
    agent.destroy();
    seedServer.close();
    rawServer.close();
  }
  process.stdout.write(JSON.stringify(results));
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
