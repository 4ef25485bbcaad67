// hyco-ws relayedConnect as a WebSocket sender; prints what the listener answered.
// argv: <ws base> <hybrid connection> <key name> <key>
'use strict';
const WebSocket = require('hyco-ws');

const [base, hc, keyName, key] = process.argv.slice(2);
const sendUri = `${base}/$hc/${hc}/chat?room=42&sb-hc-action=connect`;
const token = WebSocket.createRelayToken(sendUri, keyName, key);
const ws = WebSocket.relayedConnect(sendUri, token, () => {
  ws.send('hello from node');
});
ws.on('message', (m) => {
  console.log(JSON.stringify({ reply: m.toString() }));
  ws.close();
});
ws.on('close', () => process.exit(0));
ws.on('error', (e) => { console.error('error', e.message); process.exit(3); });
