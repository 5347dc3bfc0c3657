// CausVid live steering on the ComfyUI page: every CausVid Stream to Video node carries a panel (a DOM widget)
// that, while its run streams with live_clip connected, shows the prompts used so far and a box whose prompt drives
// the video from the next block on (the node itself shows the newest frame: ComfyUI's progress preview). The server
// side is nodes/live.py: the run announces itself as "causvid.live" over the websocket and takes prompts at POST
// /causvid/live/<run>/prompt.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_TYPE = "CausVidStreamToVideo";
const IDLE = "Live: connect live_clip, give one prompt and queue; a prompt typed here then steers the stream.";

function element(tag, style = {}, text = "") {
  const node = document.createElement(tag);
  Object.assign(node.style, style);
  node.textContent = text;
  return node;
}

class LivePanel {
  constructor(node) {
    this.node = node;
    this.run = null;
    this.root = element("div", {
      display: "flex", flexDirection: "column", gap: "4px", boxSizing: "border-box", padding: "6px",
      color: "var(--fg-color, #ddd)", fontSize: "12px", fontFamily: "sans-serif", overflow: "hidden",
    });
    this.root.className = "comfyui-causvid-live";
    this.root.dataset.node = String(node.id); // again once a loaded graph gives the node its id (onConfigure)
    this.title = element("div", { fontWeight: "bold" }, IDLE);
    this.prompts = element("ol", { margin: "0", paddingLeft: "20px", maxHeight: "80px", overflowY: "auto" });
    this.text = element("textarea", { width: "100%", boxSizing: "border-box", resize: "none" });
    this.text.rows = 2;
    this.text.placeholder = "A new prompt: it takes over at the next block (Enter sends)";
    this.text.disabled = true;
    this.send = element("button", {}, "Send");
    this.send.disabled = true;
    this.hold = element("button", { marginLeft: "6px" }, "Pause");
    this.hold.disabled = true;
    this.paused = false;
    const buttons = element("div");
    buttons.append(this.send, this.hold);
    this.status = element("div", { minHeight: "1.2em", opacity: "0.85" });
    this.root.append(this.title, this.prompts, this.text, buttons, this.status);
    this.send.addEventListener("click", () => this.submit());
    this.hold.addEventListener("click", () => this.togglePause());
    this.text.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        this.submit();
      }
    });
  }

  show(status) {
    if (this.run !== status.run) {
      this.run = status.run;
      this.text.disabled = this.send.disabled = this.hold.disabled = false;
      this.status.textContent = "";
    }
    this.root.dataset.blocks = String(status.blocks);
    this.paused = Boolean(status.paused);
    this.hold.textContent = this.paused ? "Resume" : "Pause";
    this.title.textContent = `Live: ${status.blocks} block(s) made${this.paused ? ", paused" : ""}`;
    const lines = status.prompts.map((p) => element("li", {}, `${p.seconds.toFixed(2)} s: ${p.text}`));
    this.prompts.replaceChildren(...lines);
    if (status.error) this.status.textContent = status.error;
  }

  finish(how) {
    if (this.run === null) return;
    this.text.disabled = this.send.disabled = this.hold.disabled = true;
    this.status.textContent = `The run ${how}; its prompts are saved beside the video (.prompts.txt).`;
    this.run = null;
  }

  async post(action, payload) {
    const response = await api.fetchApi(`/causvid/live/${this.run}/${action}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload),
    });
    return [response.ok, await response.json()];
  }

  async togglePause() {
    if (this.run === null) return;
    try {
      const [ok, body] = await this.post("pause", { paused: !this.paused });
      this.status.textContent = ok ? (body.paused ? `Paused after block ${body.after_block + 1}` : "Going on")
                                   : `Not sent: ${body.error}`;
    } catch (error) {
      this.status.textContent = `Not sent: ${error}`;
    }
  }

  async submit() {
    const text = this.text.value.trim();
    if (!text || this.run === null) return;
    this.send.disabled = true;
    try {
      const [ok, body] = await this.post("prompt", { text });
      if (ok) {
        this.text.value = "";
        this.status.textContent = `Encoding, for the next block to start (after ${body.after_block}): ${body.queued}`;
      } else {
        this.status.textContent = `Not sent: ${body.error}`;
      }
    } catch (error) {
      this.status.textContent = `Not sent: ${error}`;
    } finally {
      this.send.disabled = this.run === null;
    }
  }
}

const panels = new Set(); // the LivePanel of every CausVid Stream to Video node on the canvas
let streaming = null; // the panel of the run streaming now

function panelOf(nodeId) {
  for (const panel of panels) if (String(panel.node.id) === String(nodeId)) return panel;
  return null;
}

app.registerExtension({
  name: "comfyui-causvid.live",
  nodeCreated(node) {
    if (node.comfyClass !== NODE_TYPE) return;
    const panel = new LivePanel(node);
    panels.add(panel);
    node.addDOMWidget("live", "comfyui-causvid-live", panel.root, {
      serialize: false, hideOnZoom: false, getMinHeight: () => 200,
    });
    const onConfigure = node.onConfigure;
    node.onConfigure = function () {
      const result = onConfigure?.apply(this, arguments);
      panel.root.dataset.node = String(node.id);
      return result;
    };
    const onRemoved = node.onRemoved;
    node.onRemoved = function () {
      panels.delete(panel);
      return onRemoved?.apply(this, arguments);
    };
  },
  setup() {
    api.addEventListener("causvid.live", (event) => {
      const panel = panelOf(event.detail.node);
      if (panel === null) return; // a run queued from another page's graph
      streaming = panel;
      panel.show(event.detail);
    });
    const finish = (how) => () => {
      streaming?.finish(how);
      streaming = null;
    };
    api.addEventListener("execution_success", finish("finished"));
    api.addEventListener("execution_error", finish("stopped with an error"));
    api.addEventListener("execution_interrupted", finish("was cancelled"));
  },
});
