// A producer written only from docs/protocol.md (the test checks the document is enough).
// Usage: node producer.js ENDPOINT COUNT [NODE_KEY_FILE KEY_SECRET_FILE] — submits COUNT
// template jobs and one raw job, prints one JSON reply per line, exits 0 when every job got
// a final reply. With the two key files it connects with CURVE (docs/protocol.md, 1).
const fs = require("fs");
const zmq = require("zeromq");
const { encode, decode } = require("@msgpack/msgpack");

// A key file of `salvo keys generate` (pyzmq's zmq.auth format): `public-key = "..."`.
function readKey(file, name) {
  const match = fs.readFileSync(file, "utf8").match(new RegExp(`^\\s*${name}\\s*=\\s*"(.{40})"`, "m"));
  if (!match) throw new Error(`${file}: no ${name}`);
  return match[1];
}

function curveOptions(nodeKeyFile, secretFile) {
  if (!nodeKeyFile) return {};
  return {
    curveServerKey: readKey(nodeKeyFile, "public-key"),
    curvePublicKey: readKey(secretFile, "public-key"),
    curveSecretKey: readKey(secretFile, "secret-key"),
  };
}

function jobs(count) {
  const out = [];
  for (let i = 0; i < count; i++) {
    out.push({
      id: `node-${i}`,
      tenant: "acme",
      campaign: "spring",
      traffic: "marketing",
      from: "Acme <news@acme.example>",
      return_path: "bounces@acme.example",
      subject: "Hi {{ name }}",
      text: "Hello {{ name }}",
      html: "<p>Hello {{ name }}</p>",
      headers: { "Reply-To": "help@acme.example" },
      recipients: [
        { to: `ann${i}@example.org`, vars: { name: "Ann", n: i, vip: true } },
        { to: `bob${i}@example.org`, vars: { name: "Bob" }, message_id: `<bob-${i}@acme.example>` },
      ],
      send_after: "2030-01-02T03:04:05Z",
      expires_in: 86400,
      v: 1,
      added_in_a_later_version: { ignored: true },
    });
  }
  out.push({
    id: "node-raw",
    from: "a@acme.example",
    raw: "From: a@acme.example\r\nTo: c@example.org\r\nSubject: raw\r\n\r\nbody\r\n",
    recipients: [{ to: "c@example.org" }],
    send_after: 1900000000.5,
  });
  return out;
}

async function main() {
  const sock = new zmq.Dealer(curveOptions(process.argv[4], process.argv[5]));
  sock.connect(process.argv[2]);
  const waiting = new Map(jobs(Number(process.argv[3] || 1)).map((j) => [j.id, j]));
  for (let attempt = 1; attempt <= 5 && waiting.size; attempt++) {
    for (const job of waiting.values()) await sock.send(encode(job));
    sock.receiveTimeout = 10000;
    const unanswered = new Set(waiting.keys());
    try {
      while (unanswered.size) {
        const frames = await sock.receive();
        const reply = decode(frames[frames.length - 1]);
        if (!unanswered.delete(reply.id)) continue;
        if (reply.status === "retry") continue;
        waiting.delete(reply.id);
        console.log(JSON.stringify(reply));
      }
    } catch (err) {
      if (err.code !== "EAGAIN") throw err;
    }
    if (waiting.size) await new Promise((r) => setTimeout(r, 100 * 2 ** (attempt - 1)));
  }
  sock.close();
  process.exit(waiting.size ? 2 : 0);
}

main().catch((err) => {
  console.error(err);
  process.exit(2);
});
