// Node's own https/http client (re-exported by hyco-https) as an HTTP sender, token from hyco-https.
// argv: <http base> <hybrid connection> <key name> <key> <body size>
'use strict';
const https = require('hyco-https');
const http = require('http');
const crypto = require('crypto');

const [base, hc, keyName, key, size] = process.argv.slice(2);
const url = new URL(`${base}/${hc}/from-node?lang=js`);
const token = https.createRelayToken(`http://${url.host}/${hc}`, keyName, key);
const body = Buffer.alloc(parseInt(size, 10), 7);
const req = http.request(url, { method: 'POST', headers: { ServiceBusAuthorization: token,
  'Content-Length': body.length, 'X-Trace': 'node' } }, (res) => {
  const chunks = [];
  res.on('data', (c) => chunks.push(c));
  res.on('end', () => {
    const data = Buffer.concat(chunks);
    console.log(JSON.stringify({ status: res.statusCode, length: data.length,
      sha256: crypto.createHash('sha256').update(data).digest('hex'), via: res.headers.via || null }));
  });
});
req.on('error', (e) => { console.error(e.message); process.exit(2); });
req.end(body);
