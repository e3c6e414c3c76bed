// The chat page's client. It shows the history from GET /messages, then streams /events
// from the id that history ended at; EventSource reconnects by itself and sends
// Last-Event-ID, so the server resumes where the page left off. A "resync" event means the
// server could not place that id (it restarted, or the page was away too long): reload all.
const list = document.getElementById("messages");
const form = document.getElementById("send");
const input = document.getElementById("text");
let source = null;

function show(id, text) {
  const item = document.createElement("li");
  item.dataset.id = id;
  item.textContent = text;
  list.append(item);
  console.log(`message ${id} ${text}`);
}

async function connect() {
  const response = await fetch("/messages");
  const { messages, last_event_id: lastEventId } = await response.json();
  list.replaceChildren();
  for (const message of messages) show(message.id, message.text);
  source = new EventSource(`/events?lastEventId=${encodeURIComponent(lastEventId)}`);
  source.addEventListener("open", () => console.log("open"));
  source.addEventListener("error", () => console.log("reconnecting"));
  source.addEventListener("message", (event) => show(event.lastEventId, JSON.parse(event.data).text));
  source.addEventListener("resync", (event) => {
    console.log(`resync ${event.data}`);
    source.close();
    connect();
  });
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = input.value;
  input.value = "";
  await fetch("/messages", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ text }),
  });
});

connect();
