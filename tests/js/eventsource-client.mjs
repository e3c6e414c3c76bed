// A standards-following SSE client for the tests: the npm `eventsource` package, which
// implements the WHATWG EventSource interface, reading a live replkit server.
//
//   node eventsource-client.mjs URL EVENT_NAME COUNT [TIMEOUT_MS]
//
// Prints one JSON line per event named EVENT_NAME ({"type", "data", "lastEventId"}), a
// line {"open": true} when the connection opens and {"error": true, "readyState": n} on
// errors (EventSource then reconnects by itself). Exits 0 once COUNT events arrived, 2 on
// timeout after printing {"timeout": true}.
import { EventSource } from "eventsource";

const [url, eventName, countText, timeoutText = "20000"] = process.argv.slice(2);
if (!url || !eventName || !countText) {
  console.error("usage: eventsource-client.mjs URL EVENT_NAME COUNT [TIMEOUT_MS]");
  process.exit(64);
}
const wanted = Number(countText);
const print = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);

const source = new EventSource(url);
let received = 0;
const timer = setTimeout(() => {
  print({ timeout: true });
  source.close();
  process.exit(2);
}, Number(timeoutText));

source.addEventListener("open", () => print({ open: true }));
source.addEventListener("error", () => print({ error: true, readyState: source.readyState }));
source.addEventListener(eventName, (event) => {
  print({ type: event.type, data: event.data, lastEventId: event.lastEventId });
  received += 1;
  if (received >= wanted) {
    clearTimeout(timer);
    source.close();
    process.exit(0);
  }
});
