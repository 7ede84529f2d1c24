// A plain Node.js server: GET /health for cutover's probes, graceful on SIGTERM.
const http = require("node:http");

const port = Number(process.env.PORT);
const server = http.createServer((req, res) => {
  if (req.url === "/health") {
    res.writeHead(200, { "Content-Type": "text/plain" });
    res.end("ok\n");
  } else {
    res.writeHead(200, { "Content-Type": "text/plain" });
    res.end("hello from node\n");
  }
});
server.keepAliveTimeout = 5000;
server.listen(port, "127.0.0.1", () => console.log(`listening on 127.0.0.1:${port}`));

// cutover sends SIGTERM after the proxy has stopped sending requests here: finish what is in
// flight, close idle keep-alive connections, then exit.
process.on("SIGTERM", () => {
  console.log("SIGTERM: shutting down gracefully");
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});
