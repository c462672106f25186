// Uninstrumented Node.js fan-out service for the concurrent trace-context test
// (test_concurrent_context.py): node:http only. All requests share the one JS thread.
//
//     node node_fanout.js --port N --down M [--delay-ms D]
//
// GET /req/<rid>: waits D ms (so concurrent requests overlap), then GETs
// http://127.0.0.1:M/down/<rid> with http.get and the global agent (keep-alive by default
// since Node 19), then answers 200 with JSON {rid, down_status, inflight}: inflight is how
// many /req requests were being handled when this one called downstream. Anything else: 404.
// Prints "READY <port>" once listening.
'use strict';

const http = require('node:http');

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  if (i < 0 || i + 1 >= process.argv.length) {
    if (dflt !== undefined) return dflt;
    console.error(`missing ${name}`);
    process.exit(2);
  }
  return process.argv[i + 1];
}

const port = Number(arg('--port'));
const down = Number(arg('--down'));
const delay = Number(arg('--delay-ms', '30'));
let inflight = 0;

function reply(res, status, obj) {
  const body = JSON.stringify(obj) + '\n';
  res.writeHead(status, { 'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (!path.startsWith('/req/')) {
    reply(res, 404, { error: 'not found' });
    return;
  }
  const rid = path.slice('/req/'.length);
  inflight += 1;
  let seen = inflight;
  res.on('close', () => { inflight -= 1; });
  setTimeout(() => {
    seen = Math.max(seen, inflight);
    http.get({ host: '127.0.0.1', port: down, path: `/down/${rid}` }, (dres) => {
      dres.resume();
      dres.on('end', () => reply(res, 200, { rid, down_status: dres.statusCode,
        inflight: seen }));
    }).on('error', (e) => reply(res, 502, { error: String(e) }));
  }, delay);
});

server.keepAliveTimeout = 30000;
server.listen(port, '127.0.0.1', () => {
  console.log(`READY ${port}`);
});
