// hyco-ws listener against the loopback emulator: echoes every message with a prefix.
// argv: <ws base> <hybrid connection> <key name> <key>
'use strict';
const WebSocket = require('hyco-ws');

const [base, hc, keyName, key] = process.argv.slice(2);
const host = new URL(base).host;
const listenUri = `${base}/$hc/${hc}?sb-hc-action=listen`;
const tokenFn = () => WebSocket.createRelayToken(`http://${host}/${hc}`, keyName, key);

const server = WebSocket.createRelayedServer({ server: listenUri, token: tokenFn }, (ws) => {
  ws.on('message', (m, flags) => {
    if (flags && flags.binary) ws.send(Buffer.concat([Buffer.from('echo:'), m]), { binary: true });
    else ws.send('echo:' + m);
  });
});
server.on('error', (e) => console.error('relay error', e && e.message ? e.message : e));
// hyco-ws has no 'listening' event: report the control channel once it is open.
const timer = setInterval(() => {
  if (server.controlChannel && server.controlChannel.readyState === 1) {
    clearInterval(timer);
    console.log('READY');
  }
}, 50);
