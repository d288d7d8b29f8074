#!/usr/bin/env node
// Stub-resolver client: Node's dns.Resolver (c-ares bundled with Node) resolve4/resolve6 against
// one server, then net.connect to the first address.
// Usage: node_client.js NAME PORT ROUNDS --server ADDR --dns-port P [--family 4|6]
// A new Resolver per round, so no c-ares query cache carries over. Prints one JSON line (README.md).
'use strict';
const dns = require('dns');
const net = require('net');

function usage(msg) {
  process.stderr.write(`node_client: ${msg}\nusage: node_client.js NAME PORT ROUNDS --server ADDR --dns-port P [--family 4|6]\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const pos = [];
  const opts = { family: '4' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--server' || a === '--dns-port' || a === '--family') {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      opts[a.slice(2)] = argv[++i];
    } else if (a.startsWith('--')) {
      usage(`unknown option ${a}`);
    } else {
      pos.push(a);
    }
  }
  if (pos.length !== 3) usage('need NAME PORT ROUNDS');
  const num = (s, what) => {
    if (!/^\d+$/.test(s)) usage(`bad ${what}: ${s}`);
    return Number(s);
  };
  if (!opts.server) usage('--server is required');
  if (!opts['dns-port']) usage('--dns-port is required');
  if (opts.family !== '4' && opts.family !== '6') usage('--family is 4 or 6');
  return {
    name: pos[0], port: num(pos[1], 'PORT'), rounds: num(pos[2], 'ROUNDS'),
    server: opts.server, dnsPort: num(opts['dns-port'], '--dns-port'), family: opts.family,
  };
}

function greet(addr, port) {
  return new Promise((resolve) => {
    let data = Buffer.alloc(0);
    let done = false;
    let connected = false;
    const finish = (reply, err) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve([reply, err]);
    };
    const sock = net.connect({ host: addr, port });
    const timer = setTimeout(() => {
      if (!connected) finish(null, 'connect: timed out');
      else if (data.length) finish(data.toString('utf8').trim(), null);
      else finish(null, 'read: timed out');
    }, 2000);
    sock.on('connect', () => { connected = true; });
    sock.on('data', (chunk) => {
      data = Buffer.concat([data, chunk]);
      if (data.length >= 64) finish(data.subarray(0, 64).toString('utf8').trim(), null);
    });
    sock.on('end', () => finish(data.toString('utf8').trim(), null));
    sock.on('error', (err) => {
      if (connected && data.length) finish(data.toString('utf8').trim(), null);
      else finish(null, `${connected ? 'read' : 'connect'}: ${err.code || err.message}`);
    });
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const server = args.server.includes(':') ? `[${args.server}]:${args.dnsPort}` : `${args.server}:${args.dnsPort}`;
  const replies = {};
  const errors = {};
  const seen = [];
  const bump = (map, key) => { map[key] = (map[key] || 0) + 1; };
  for (let i = 0; i < args.rounds; i++) {
    const resolver = new dns.promises.Resolver({ timeout: 2000, tries: 2 });
    resolver.setServers([server]);
    let addrs;
    try {
      addrs = args.family === '4' ? await resolver.resolve4(args.name) : await resolver.resolve6(args.name);
    } catch (err) {
      bump(errors, `resolve: ${err.code || err.message}`);
      continue;
    }
    if (!addrs.length) {
      bump(errors, 'resolve: no address');
      continue;
    }
    if (!seen.includes(addrs[0])) seen.push(addrs[0]);
    const [reply, err] = await greet(addrs[0], args.port);
    if (err !== null) bump(errors, err);
    else bump(replies, reply);
  }
  process.stdout.write(`${JSON.stringify({ rounds: args.rounds, replies, errors, addresses: seen })}\n`);
}

main();
