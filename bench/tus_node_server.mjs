// The reference server for bench/bench_tus.py: @tus/server with @tus/file-store.
// node bench/tus_node_server.mjs PORT DIR
import http from 'node:http';
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';

const [port, directory] = process.argv.slice(2);
const tus = new Server({ path: '/files', datastore: new FileStore({ directory }) });
http.createServer((req, res) => {
  if (req.url === '/stats/') {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ pid: process.pid, rss_kib: Math.round(process.memoryUsage().rss / 1024) }));
    return;
  }
  tus.handle(req, res);
}).listen(Number(port), '127.0.0.1');
