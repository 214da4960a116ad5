#!/usr/bin/env bash
# Builds docs/chat.html, the chat page (GET /chat), from web/: chat.js and
# the markdown-it it imports bundled and minified by esbuild (both pinned in
# package.json), chat.css minified, both inlined into chat.html. The page
# then loads nothing from anywhere; the api-docs function serves it with a
# Content-Security-Policy that allows exactly this script and style by their
# SHA-256 (shared/src/http/docs.rs). Run after every change to web/; the
# drift check in scripts/test.sh fails until you do.
#   scripts/page.sh [OUT (docs/chat.html)]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x node_modules/.bin/esbuild ] || npm ci --no-audit --no-fund --loglevel=error
node - "${1:-docs/chat.html}" <<'JS'
const fs = require("fs");
const { buildSync } = require("esbuild");
const out = process.argv[2];
const js = buildSync({
  entryPoints: ["web/chat.js"], bundle: true, minify: true, write: false,
  format: "iife", target: "es2020", legalComments: "none", charset: "utf8",
}).outputFiles[0].text.trim();
const css = buildSync({
  entryPoints: ["web/chat.css"], minify: true, write: false, loader: { ".css": "css" },
}).outputFiles[0].text.trim();
if (/<\/script/i.test(js) || /<\/style/i.test(css)) throw new Error("the bundle would close its own tag");
const page = fs.readFileSync("web/chat.html", "utf8")
  .replace("/*STYLE*/", () => css)
  .replace("/*SCRIPT*/", () => js);
fs.writeFileSync(out, page);
const gz = require("zlib").gzipSync(page, { level: 9 }).length;
console.error(`${out}: ${page.length} bytes, ${gz} gzipped`);
JS
