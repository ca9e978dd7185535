// Socket.IO 4 broadcast server: each "event" goes to every other connected socket.
const http = require("http");
const { Server } = require("socket.io");

const server = http.createServer();
const io = new Server(server, { transports: ["websocket"], perMessageDeflate: false, serveClient: false });
io.on("connection", (socket) => {
  socket.on("event", (data) => socket.broadcast.emit("event", data));
});
server.listen(Number(process.argv[2] || 0), "127.0.0.1", () => {
  console.log(`listening on ws://127.0.0.1:${server.address().port}/socket.io/?EIO=4&transport=websocket`);
});
