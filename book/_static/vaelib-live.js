/* vaelib-live.js: the book's live figures (vaelib.figures.live), with no dependencies and no network.
 *
 * A cell's output holds <div class="vaelib-live" data-vaelib-live="manifold|sliders" data-model-file=...>
 * with a static fallback and a hidden app. This script loads the exported decoder with a <script> element
 * (fetch() of local files is refused under file://) from live-models/ beside the book's index.html, runs it
 * in Float32Arrays, shows the app and hides the fallback (print media shows the fallback again: vaelib.css).
 *
 * window.vaelibLive: {ready: a Promise settled once every figure of the page is drawn (or has failed),
 * models: {run name: Decoder}, Decoder, normalPpf, normalCdf}; Decoder#decode(z) returns E[x|z] as a new
 * Float32Array of the image's D = C*H*W values in [0, 1], channel-major like torch's.
 */
(function () {
  "use strict";

  const FORMAT = "vaelib-live-decoder/1";
  const GLOBAL = "VAELIB_LIVE_MODELS";
  const MODELS_DIR = "live-models/";
  const SLIDER_RANGE = 3; // prior standard deviations, as the Lab explorer's sliders
  const KEY_STEP = 0.1; // z moved by an arrow key
  // This file is <book>/_static/vaelib-live.js; the exported decoders are in <book>/live-models/.
  const here = document.currentScript ? document.currentScript.src : document.baseURI;
  const BOOK_ROOT = new URL("../", here);

  const ACTIVATIONS = {
    tanh: Math.tanh,
    relu: (x) => (x > 0 ? x : 0),
    elu: (x) => (x > 0 ? x : Math.expm1(x)),
    softplus: (x) => (x > 20 ? x : Math.log1p(Math.exp(x))), // torch's threshold of 20
  };

  /* Phi^-1(p) by Acklam's rational approximation (relative error below 1.2e-9). */
  function normalPpf(p) {
    const a = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.38357751867269e2,
      -3.066479806614716e1, 2.506628277459239];
    const b = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1,
      -1.328068155288572e1];
    const c = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734,
      4.374664141464968, 2.938163982698783];
    const d = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    const low = 0.02425;
    if (p <= 0) return -Infinity;
    if (p >= 1) return Infinity;
    if (p < low || p > 1 - low) {
      const q = Math.sqrt(-2 * Math.log(p < low ? p : 1 - p));
      const x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
      return p < low ? x : -x;
    }
    const q = p - 0.5;
    const r = q * q;
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
      (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  }

  /* Phi(x) through erfc (Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7): places the marker. */
  function normalCdf(x) {
    const t = 1 / (1 + 0.3275911 * Math.abs(x) / Math.SQRT2);
    const erfc = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))) *
      Math.exp(-x * x / 2);
    return x >= 0 ? 1 - erfc / 2 : erfc / 2;
  }

  function gaussian() {
    // Box-Muller; 1 - random() lies in (0, 1], so the log is finite.
    return Math.sqrt(-2 * Math.log(1 - Math.random())) * Math.cos(2 * Math.PI * Math.random());
  }

  function base64Bytes(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  /* The MLP decoder of one exported run: weights dequantized once, each decode two matrix-vector products. */
  class Decoder {
    constructor(entry) {
      const header = entry.header;
      if (header.format !== FORMAT) {
        throw new Error(`model ${header.key}: format ${header.format}, this page reads ${FORMAT}`);
      }
      if (header.output_link !== "sigmoid") throw new Error(`model ${header.key}: unknown output link ${header.output_link}`);
      this.header = header;
      this.latentDim = header.latent_dim;
      this.imageShape = header.image_shape;
      const view = new DataView(base64Bytes(entry.data).buffer);
      this.layers = header.layers.map((spec) => {
        if (spec.activation && !(spec.activation in ACTIVATIONS)) {
          throw new Error(`model ${header.key}: unknown activation ${spec.activation}`);
        }
        const weight = new Float32Array(spec.out * spec.in);
        const bias = new Float32Array(spec.out);
        for (let j = 0; j < spec.out; j++) {
          const scale = view.getFloat32(spec.scale_offset + 4 * j, true);
          bias[j] = view.getFloat32(spec.bias_offset + 4 * j, true);
          const row = j * spec.in;
          for (let i = 0; i < spec.in; i++) weight[row + i] = view.getInt16(spec.weight_offset + 2 * (row + i), true) * scale;
        }
        return { nIn: spec.in, nOut: spec.out, weight, bias, activation: spec.activation ? ACTIVATIONS[spec.activation] : null,
          out: new Float32Array(spec.out) };
      });
      this.input = new Float32Array(this.latentDim);
      const last = this.layers[this.layers.length - 1];
      this.size = last.nOut;
      if (this.layers[0].nIn !== this.latentDim || this.size !== this.imageShape.reduce((p, s) => p * s, 1)) {
        throw new Error(`model ${header.key}: layer shapes do not match latent_dim and image_shape`);
      }
    }

    decode(z) {
      if (z.length !== this.latentDim) throw new Error(`decode: z has ${z.length} values, the model ${this.latentDim}`);
      // Every layer reads a Float32Array: one array type keeps the inner loop monomorphic, and fast.
      let x = this.input;
      for (let i = 0; i < z.length; i++) x[i] = z[i];
      for (const layer of this.layers) {
        const { nIn, nOut, weight, bias, activation, out } = layer;
        for (let j = 0; j < nOut; j++) {
          let sum = bias[j];
          const row = j * nIn;
          for (let i = 0; i < nIn; i++) sum += weight[row + i] * x[i];
          out[j] = sum;
        }
        if (activation) for (let j = 0; j < nOut; j++) out[j] = activation(out[j]);
        x = out;
      }
      const mean = new Float32Array(this.size);
      for (let j = 0; j < this.size; j++) mean[j] = 1 / (1 + Math.exp(-x[j]));
      return mean;
    }
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function newCanvas(width, height, className) {
    const canvas = element("canvas", className);
    canvas.width = width;
    canvas.height = height;
    return canvas;
  }

  /* Draw one image (C, H, W values in [0, 1], channel-major) at (left, top) of a 2-D context. */
  function paint(context, pixels, shape, left, top) {
    const [channels, height, width] = shape;
    const image = context.createImageData(width, height);
    const plane = height * width;
    for (let p = 0; p < plane; p++) {
      for (let k = 0; k < 3; k++) {
        const v = pixels[(channels === 1 ? 0 : k) * plane + p];
        image.data[4 * p + k] = Math.round(255 * Math.min(1, Math.max(0, v)));
      }
      image.data[4 * p + 3] = 255;
    }
    context.putImageData(image, left, top);
  }

  function decodedPanel(decoder, scale) {
    const [, height, width] = decoder.imageShape;
    const panel = element("div", "vaelib-live-panel");
    const canvas = newCanvas(width, height, "vaelib-live-decoded");
    canvas.style.width = `${width * scale}px`;
    canvas.style.height = `${height * scale}px`;
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", "E[x|z] at the chosen z");
    const readout = element("div", "vaelib-live-z");
    panel.append(canvas, readout);
    return { panel, canvas, readout, context: canvas.getContext("2d") };
  }

  function fmt(v) {
    return (v < 0 ? "\u2212" : "\u2007") + Math.abs(v).toFixed(2);
  }

  /* Runs `draw` at most once per animation frame, however many events ask for it. */
  function throttled(draw) {
    let pending = false;
    return () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        draw();
      });
    };
  }

  /* The paper's Fig. 4, live: the n x n grid z = Phi^-1(u) with the point under the pointer decoded. */
  function manifoldFigure(root, app, decoder) {
    if (decoder.latentDim !== 2) throw new Error(`the manifold needs a 2-D model; ${decoder.header.key} has ${decoder.latentDim}`);
    const n = Number(root.dataset.n);
    const scale = Number(root.dataset.scale) || 10;
    if (!(n >= 2)) throw new Error(`data-n=${root.dataset.n}: the manifold needs n >= 2`);
    const [, height, width] = decoder.imageShape;
    const row = element("div", "vaelib-live-row");
    const left = element("div", "vaelib-live-panel vaelib-live-manifold-panel");
    const stack = element("div", "vaelib-live-stack");
    const grid = newCanvas(n * width, n * height, "vaelib-live-manifold");
    const marker = newCanvas(n * width, n * height, "vaelib-live-marker");
    marker.tabIndex = 0;
    marker.setAttribute("aria-label", "latent space: point, drag, or use the arrow keys");
    stack.append(grid, marker);
    left.append(stack, element("div", "vaelib-live-axes", "z\u2081 \u2192 right, z\u2082 \u2192 up"));
    const out = decodedPanel(decoder, scale);
    row.append(left, out.panel);
    app.prepend(row);

    const z = [0, 0];
    const markerContext = marker.getContext("2d");
    const draw = throttled(() => {
      paint(out.context, decoder.decode(z), decoder.imageShape, 0, 0);
      out.readout.textContent = `z = (${fmt(z[0])}, ${fmt(z[1])})`;
      const x = normalCdf(z[0]) * marker.width;
      const y = (1 - normalCdf(z[1])) * marker.height;
      const arm = Math.max(width, height) * 0.6;
      markerContext.clearRect(0, 0, marker.width, marker.height);
      markerContext.strokeStyle = "#e8202a";
      markerContext.lineWidth = Math.max(1.5, marker.width / 180);
      markerContext.beginPath();
      markerContext.moveTo(x - arm, y);
      markerContext.lineTo(x + arm, y);
      markerContext.moveTo(x, y - arm);
      markerContext.lineTo(x, y + arm);
      markerContext.stroke();
    });
    // u = Phi(z) in (0, 1)^2 across the picture; keep off the edges, where Phi^-1 is infinite.
    const clampU = (u) => Math.min(0.999, Math.max(0.001, u));
    const moveTo = (event) => {
      const box = marker.getBoundingClientRect();
      z[0] = normalPpf(clampU((event.clientX - box.left) / box.width));
      z[1] = normalPpf(clampU(1 - (event.clientY - box.top) / box.height));
      draw();
    };
    marker.addEventListener("pointerdown", (event) => {
      marker.setPointerCapture(event.pointerId);
      marker.focus({ preventScroll: true });
      moveTo(event);
      event.preventDefault();
    });
    marker.addEventListener("pointermove", moveTo);
    marker.addEventListener("keydown", (event) => {
      const steps = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowDown: [1, -1], ArrowUp: [1, 1] }[event.key];
      if (!steps) return;
      const limit = normalPpf(0.999);
      z[steps[0]] = Math.min(limit, Math.max(-limit, z[steps[0]] + steps[1] * KEY_STEP));
      draw();
      event.preventDefault();
    });
    draw();

    // The grid, a few rows per frame so that the page stays responsive; row 0 is the top (largest u_2).
    const gridContext = grid.getContext("2d");
    return new Promise((done) => {
      let r = 0;
      const rows = () => {
        const until = performance.now() + 12;
        while (r < n && performance.now() < until) {
          const z2 = normalPpf(1 - (r + 0.5) / n);
          for (let c = 0; c < n; c++) {
            paint(gridContext, decoder.decode([normalPpf((c + 0.5) / n), z2]), decoder.imageShape, c * width, r * height);
          }
          r += 1;
        }
        if (r < n) requestAnimationFrame(rows);
        else done();
      };
      rows();
    });
  }

  /* Sliders over the dimensions of largest KL (the others held at 0), and a draw from the prior. */
  function slidersFigure(root, app, decoder) {
    const header = decoder.header;
    const dims = header.active_dims || Array.from({ length: Math.min(10, decoder.latentDim) }, (_, i) => i);
    const kl = header.kl_nats || [];
    const scale = Number(root.dataset.scale) || 10;
    const z = new Float64Array(decoder.latentDim);
    const row = element("div", "vaelib-live-row");
    const controls = element("div", "vaelib-live-panel vaelib-live-sliders");
    const out = decodedPanel(decoder, scale);
    const others = element("div", "vaelib-live-others");
    const hidden = decoder.latentDim - dims.length;
    const draw = throttled(() => {
      paint(out.context, decoder.decode(z), decoder.imageShape, 0, 0);
    });
    const inputs = dims.map((d, k) => {
      const label = element("label", "vaelib-live-slider");
      const name = element("span", "vaelib-live-name", "z");
      name.append(element("sub", null, String(d + 1)));
      const input = element("input");
      Object.assign(input, { type: "range", min: -SLIDER_RANGE, max: SLIDER_RANGE, step: 0.01, value: 0 });
      input.setAttribute("aria-label", `z${d + 1}`);
      const value = element("output", "vaelib-live-value", fmt(0));
      const info = element("span", "vaelib-live-kl", kl[k] !== undefined ? `KL ${kl[k].toFixed(2)}` : "");
      input.addEventListener("input", () => {
        z[d] = Number(input.value);
        value.textContent = fmt(z[d]);
        draw();
      });
      label.append(name, input, value, info);
      controls.append(label);
      return { d, input, value };
    });
    const sync = (othersText) => {
      for (const { d, input, value } of inputs) {
        input.value = String(Math.min(SLIDER_RANGE, Math.max(-SLIDER_RANGE, z[d])));
        value.textContent = fmt(z[d]);
      }
      others.textContent = hidden > 0 ? `The other ${hidden} dimensions: ${othersText}.` : "";
      draw();
    };
    const buttons = element("div", "vaelib-live-buttons");
    const sample = element("button", "vaelib-live-sample", "Sample from the prior");
    const reset = element("button", "vaelib-live-reset", "Reset to 0");
    sample.type = reset.type = "button";
    sample.addEventListener("click", () => {
      for (let j = 0; j < z.length; j++) z[j] = gaussian();
      sync("drawn from N(0, 1) with the rest");
    });
    reset.addEventListener("click", () => {
      z.fill(0);
      sync("0");
    });
    buttons.append(sample, reset);
    controls.append(buttons, others);
    out.readout.textContent = `E[x|z], ${decoder.latentDim} latent dimensions`;
    row.append(controls, out.panel);
    app.prepend(row);
    sync("0");
    return Promise.resolve();
  }

  const FIGURES = { manifold: manifoldFigure, sliders: slidersFigure };
  const loaded = {};

  /* The decoder in live-models/<file>, loaded once per page by a <script> element. */
  function loadDecoder(file, key) {
    if (!/^[\w.-]+\.js$/.test(file)) return Promise.reject(new Error(`bad model file name ${file}`));
    if (!loaded[file]) {
      loaded[file] = new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = new URL(MODELS_DIR + file, BOOK_ROOT).href;
        script.onload = resolve;
        script.onerror = () => reject(new Error(`could not load ${script.src}`));
        document.head.append(script);
      });
    }
    return loaded[file].then(() => {
      const entry = (window[GLOBAL] || {})[key];
      if (!entry) throw new Error(`${file} holds no model ${key}`);
      if (!api.models[key]) api.models[key] = new Decoder(entry);
      return api.models[key];
    });
  }

  function start(root) {
    const kind = root.dataset.vaelibLive;
    const app = root.querySelector(".vaelib-live-app");
    root.dataset.liveState = "loading";
    return loadDecoder(root.dataset.modelFile, root.dataset.modelKey)
      .then((decoder) => {
        if (!FIGURES[kind] || !app) throw new Error(`unknown live figure ${kind}`);
        const drawn = FIGURES[kind](root, app, decoder);
        app.hidden = false;
        root.classList.add("vaelib-live-on");
        return drawn;
      })
      .then(() => {
        root.dataset.liveState = "ready";
      })
      .catch((error) => {
        // The static fallback stays in place.
        root.dataset.liveState = "failed";
        console.error(`vaelib-live: ${error.message}`);
      });
  }

  let settle;
  const api = { ready: new Promise((resolve) => { settle = resolve; }), models: {}, Decoder, normalPpf, normalCdf };
  window.vaelibLive = api;
  const startAll = () => {
    const roots = Array.from(document.querySelectorAll(".vaelib-live[data-vaelib-live]"));
    Promise.all(roots.map(start)).then(() => settle(roots.length));
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", startAll);
  else startAll();
})();
