// hyco-https listener pointed at the loopback emulator (Option A: URIs built by hand, ws:// endpoint).
// argv: <ws base, e.g. ws://127.0.0.1:PORT> <hybrid connection> <key name> <key>
'use strict';
const https = require('hyco-https');
const crypto = require('crypto');

const [base, hc, keyName, key] = process.argv.slice(2);
const host = new URL(base).host;
const listenUri = `${base}/$hc/${hc}?sb-hc-action=listen`;
const tokenFn = () => https.createRelayToken(`http://${host}/${hc}`, keyName, key);

const server = https.createRelayedServer({ server: listenUri, token: tokenFn }, (req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    const sha256 = crypto.createHash('sha256').update(body).digest('hex');
    const want = parseInt(req.headers['x-response-size'] || '0', 10);
    res.statusCode = parseInt(req.headers['x-status'] || '200', 10);
    if (want > 0) {
      const out = Buffer.alloc(want);
      for (let i = 0; i < want; i++) out[i] = i % 251;
      res.setHeader('content-type', 'application/octet-stream');
      res.end(out);
    } else {
      res.setHeader('content-type', 'application/json');
      res.setHeader('x-node', 'hyco-https');
      res.end(JSON.stringify({ method: req.method, url: req.url, length: body.length, sha256,
        trace: req.headers['x-trace'] || null }));
    }
  });
});
server.on('error', (e) => console.error('relay error', e && e.message ? e.message : e));
server.on('listening', () => console.log('READY'));
server.listen();
