// Uninstrumented node HTTPS server for the e2e tests: node:http2 createSecureServer with
// allowHTTP1, so one TLS listener speaks HTTP/2 (ALPN h2) and HTTP/1.1 (ALPN http/1.1 or none).
//
//     node node_tls.js --port N --cert FILE --key FILE
//     node node_tls.js --port N --plain      cleartext HTTP/1.1 (node:http): the tests' control
//
// Routes: /hello 200, /boom 500, anything else 404. Prints "READY <port>" once listening.
'use strict';

const fs = require('node:fs');
const http = require('node:http');
const http2 = require('node:http2');

function arg(name) {
  const i = process.argv.indexOf(name);
  if (i < 0 || i + 1 >= process.argv.length) {
    console.error(`missing ${name}`);
    process.exit(2);
  }
  return process.argv[i + 1];
}

const port = Number(arg('--port'));
const server = process.argv.includes('--plain')
  ? http.createServer()
  : http2.createSecureServer({
    cert: fs.readFileSync(arg('--cert')),
    key: fs.readFileSync(arg('--key')),
    allowHTTP1: true,
  });

server.on('request', (req, res) => {
  const path = req.url.split('?')[0];
  let status = 404;
  let body = 'not found\n';
  if (path === '/hello') {
    status = 200;
    body = `hello over HTTP/${req.httpVersion}\n`;
  } else if (path === '/boom') {
    status = 500;
    body = 'boom\n';
  }
  res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});

server.listen(port, '127.0.0.1', () => {
  console.log(`READY ${port}`);
});
