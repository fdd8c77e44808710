// The Node.js peer of `webhook-bench`: GitHub deliveries accepted the way the seed's stack
// does it — `@octokit/webhooks-methods` verifies the signature, `JSON.parse` reads the body,
// one INSERT per request through a `pg` pool — into the same `webhook_events` table, so the
// benchmark can compare the Rust stack with it in the same run on the same database.
//
// Environment: DATABASE_URL, WEBHOOK_SECRET, PG_POOL (default 20, the service's pool size).
// Listens on 127.0.0.1, a free port, and prints `listening <port>` on stdout.
// Route: POST /api/integrations/github/webhook/<integration id>.
import http from "node:http";
import { randomUUID } from "node:crypto";
import pg from "pg";
import { verify } from "@octokit/webhooks-methods";

const secret = process.env.WEBHOOK_SECRET;
const pool = new pg.Pool({
  connectionString: process.env.DATABASE_URL,
  max: Number(process.env.PG_POOL || 20),
});
const PREFIX = "/api/integrations/github/webhook/";
const STORED_HEADERS = ["content-type", "user-agent", "x-github-event", "x-github-delivery"];

function answer(res, status, body) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

async function receive(req, res) {
  if (req.method !== "POST" || !req.url.startsWith(PREFIX)) {
    return answer(res, 404, { error: "Not found" });
  }
  const integrationId = req.url.slice(PREFIX.length);
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const body = Buffer.concat(chunks).toString("utf8");
  const signature = req.headers["x-hub-signature-256"];
  const event = req.headers["x-github-event"];
  const delivery = req.headers["x-github-delivery"];
  if (!signature || !(await verify(secret, body, signature))) {
    return answer(res, 401, { error: "Invalid webhook signature" });
  }
  if (!event || !delivery) {
    return answer(res, 400, { error: "Missing event type or delivery id" });
  }
  let payload;
  try {
    payload = JSON.parse(body);
  } catch {
    return answer(res, 400, { error: "Invalid webhook body" });
  }
  const headers = {};
  for (const name of STORED_HEADERS) if (req.headers[name]) headers[name] = req.headers[name];
  const id = randomUUID();
  const now = new Date();
  const result = await pool.query(
    `INSERT INTO webhook_events (id, integration_id, event_type, delivery_id, payload, headers,
       processed, status, retry_count, next_attempt_at, processed_at, received_at)
     VALUES ($1, $2, $3, $4, $5, $6, false, 'PENDING', 0, $7, NULL, $7)
     ON CONFLICT (integration_id, delivery_id) DO NOTHING RETURNING id`,
    [id, integrationId, event, delivery, payload, headers, now],
  );
  answer(res, 200, { success: true, eventId: result.rows[0]?.id ?? null });
}

const server = http.createServer((req, res) => {
  receive(req, res).catch(() => answer(res, 500, { error: "Internal error" }));
});
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
