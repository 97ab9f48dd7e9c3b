// Multi-Region Guided Diffusion: the region canvas.
//
// Three parts: the spec model (pure data: a blank spec, loading and normalising, region kinds;
// window.mrgdSpecModel), the Gradio bridge (the hidden spec textbox, the host's fields, the
// importer), and the panel (the canvas view and its rows). The whole state is the edit spec, kept
// as JSON in one hidden textbox (#<tab>_mrgd_spec) and written with the WebUI's updateInput so
// Python sees it. Writes to that textbox from outside (pasted infotext, "Send to") and to the
// width/height fields are seen as they happen (no polling). Boxes are [x, y, w, h] fractions.
// Region defaults, badges, option labels and the maximum number of regions come from Python.
(function () {
    "use strict";

    const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#2bb5c9", "#f032e6", "#9bbd20",
        "#e88aa0", "#469990", "#a77fd6", "#9a6324", "#c9b800", "#800000", "#3fa07a", "#808000"];
    const MIN_SIZE = 0.02; // smallest box, as a fraction of the canvas side
    const HANDLES = ["nw", "n", "ne", "e", "se", "s", "sw", "w"];
    // a region row's columns: [class, header, placeholder, help]
    const COLUMNS = [
        ["num", "#", "", ""], ["kind", "kind", "", "what happens to the region"],
        ["source", "source prompt", "source (empty: add)", "what is in the box now; empty: the object is added"],
        ["target", "target prompt", "target (empty: remove)", "what should be there; empty: the object is removed"],
        ["keywords", "keywords", "keywords, …", "words that name the object, comma separated (guidance)"],
        ["feather", "feather", "", "soft edge, 0 to 1 of half the box's short side"],
        ["negative", "negative", "negative (empty: main)", "the region's negative prompt; empty: the main one"],
        ["delete", "", "", ""],
    ];

    function app() {
        return typeof gradioApp === "function" ? gradioApp() : document;
    }

    function round4(v) {
        return Math.round(v * 10000) / 10000;
    }

    function clamp(v, lo, hi) {
        return Math.min(hi, Math.max(lo, v));
    }

    const copy = (v) => JSON.parse(JSON.stringify(v));

    // -- the spec model: data only, no DOM ------------------------------------------------------

    function specModel(config) {
        const model = {
            config,
            blank() {
                return {version: 1, enabled: false, main_prompt_common: true, background: "", regions: [],
                    options: copy(config.options)};
            },
            region(box) {
                return {...copy(config.region), box};
            },
            // the badge a region shows; the rule is the spec module's RegionKind (a browser test
            // checks both agree)
            kind(r) {
                const s = (r.source || "").trim(), t = (r.target || "").trim();
                if (!s && !t) return "empty";
                if (!s) return config.badges.addition;
                if (!t) return config.badges.removal;
                return s === t ? config.badges.inherent : config.badges.attribute;
            },
            label(kind) {
                return kind === "empty" ? "no prompt" : kind;
            },
            canAdd(spec) {
                return spec.regions.length < config.max_regions;
            },
            // text from the spec field or the Import box: {spec} | {off: true} | {error}.
            // pasted: from an infotext; one written before the common prompt existed (no
            // main_prompt_common) had the main prompt as its background
            parse(text, current, pasted = false) {
                if (!text || !text.trim()) return {spec: model.blank()};
                let data;
                try {
                    data = JSON.parse(text);
                    if (typeof data === "string") data = JSON.parse(data); // an infotext value quoted twice
                } catch (err) {
                    return {error: `not JSON: ${err.message}`};
                }
                if (!data || typeof data !== "object") return {error: "not a spec object"};
                if (data.keep_regions === true) return {off: true}; // a pasted infotext without MRGD
                let common = data.main_prompt_common;
                if (typeof common !== "boolean") common = pasted ? false : current.main_prompt_common !== false;
                return {spec: {
                    ...data, version: data.version || 1, enabled: data.enabled !== false, main_prompt_common: common,
                    regions: (data.regions || []).map((r) => ({...copy(config.region), ...r})),
                    options: {...copy(config.options), ...(data.options || {})},
                }};
            },
            normalized(spec) {
                const out = copy(spec);
                for (const r of out.regions) r.box = r.box.map(round4);
                return out;
            },
        };
        return model;
    }

    // -- the Gradio bridge: the page's fields ---------------------------------------------------

    // calls fn whenever node's value is set, by the user or by script (Gradio sets values as a
    // property, which fires no event)
    function watchValue(node, fn) {
        if (!node || node.mrgdWatched) return;
        node.mrgdWatched = true;
        const own = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(node), "value");
        Object.defineProperty(node, "value", {
            configurable: true,
            get() { return own.get.call(this); },
            set(v) { own.set.call(this, v); fn(); },
        });
        node.addEventListener("input", fn);
        node.addEventListener("change", fn);
    }

    class Bridge {
        constructor(tab) {
            this.tab = tab;
        }

        node(selector) {
            return app().querySelector(selector.replaceAll("{tab}", this.tab));
        }

        specField() {
            return this.node("#{tab}_mrgd_spec textarea");
        }

        write(json) {
            const field = this.specField();
            if (!field) return;
            field.value = json;
            if (typeof updateInput === "function") updateInput(field);
        }

        size() {
            const read = (name) => {
                const input = this.node(`#{tab}_${name} input[type=number]`);
                const v = input ? parseFloat(input.value) : NaN;
                return Number.isNaN(v) || v <= 0 ? 512 : v;
            };
            return [read("width"), read("height")];
        }

        // onSpec: the spec field changed; onImport: the importer answered; onSize: width/height
        watch(onSpec, onImport, onSize) {
            const attach = () => {
                watchValue(this.specField(), onSpec);
                watchValue(this.node("#{tab}_mrgd_import_result textarea"), onImport);
                for (const name of ["width", "height"]) {
                    app().querySelectorAll(`#${this.tab}_${name} input`).forEach((n) => watchValue(n, onSize));
                }
            };
            attach();
            // Gradio may rebuild a component; the WebUI reports every UI update
            if (typeof onAfterUiUpdate === "function") onAfterUiUpdate(attach);
        }

        importResult() {
            const node = this.node("#{tab}_mrgd_import_result textarea");
            return node ? node.value : "";
        }

        mainPrompts() {
            const prompt = this.node("#{tab}_prompt textarea"), negative = this.node("#{tab}_neg_prompt textarea");
            return [prompt ? prompt.value : "", negative ? negative.value : ""];
        }

        setHostField(name, value) {
            const node = this.node(`#{tab}_${name} textarea, #{tab}_${name} input[type=number]`);
            if (!node || value === undefined) return;
            node.value = String(value);
            updateInput(node);
        }

        runImport(text) {
            const input = this.node("#{tab}_mrgd_import textarea"), run = this.node("#{tab}_mrgd_import_run");
            if (!input || !run) return false;
            input.value = text;
            updateInput(input);
            run.click();
            return true;
        }

        initImage() {
            const img = this.node("#img2img_image img");
            return img && img.src ? img.src : "";
        }

        accordionHead() {
            return this.node("#{tab}_mrgd .label-wrap") || this.node("#{tab}_mrgd > button");
        }
    }

    function el(tag, attrs, children) {
        const node = document.createElement(tag);
        for (const [k, v] of Object.entries(attrs || {})) {
            if (k === "class") node.className = v;
            else if (k === "text") node.textContent = v;
            else node.setAttribute(k, v);
        }
        for (const child of children || []) node.appendChild(child);
        return node;
    }

    // -- the panel: the canvas and its rows ------------------------------------------------------

    class Panel {
        constructor(root) {
            this.root = root;
            this.tab = root.dataset.tab;
            const config = JSON.parse(root.dataset.defaults);
            this.model = specModel(config);
            this.bridge = new Bridge(this.tab);
            this.defaults = config.options;
            this.optionText = config.option_text || {};
            this.spec = this.model.blank();
            this.selected = -1;
            this.lastSeen = "";
            this.lastImport = "";
            this.drag = null;
            this.build();
            this.render();
            this.bridge.watch(() => this.onSpecField(), () => this.onImportResult(), () => this.onSize());
        }

        // -- building the DOM ---------------------------------------------------------------

        build() {
            this.enable = el("input", {type: "checkbox", class: "mrgd-enable"});
            this.enable.addEventListener("change", () => {
                this.spec.enabled = this.enable.checked;
                this.showState();
                this.write();
            });
            // the main prompt: every region's prefix (the authors' way), or the background layer's prompt
            this.common = el("input", {type: "checkbox", class: "mrgd-common"});
            this.background = el("input", {type: "text", class: "mrgd-background",
                placeholder: "background prompt (r_bg)",
                title: "r_bg's own prompt; the main prompt comes first, as in every region"});
            this.common.addEventListener("change", () => {
                this.spec.main_prompt_common = this.common.checked;
                this.render();
                this.write();
            });
            this.background.addEventListener("input", () => {
                this.spec.background = this.background.value;
                this.write();
            });
            this.canvas = el("div", {class: "mrgd-canvas", tabindex: "0", title: "drag to draw a box"});
            this.canvas.addEventListener("pointerdown", (e) => this.onDown(e));
            this.canvas.addEventListener("keydown", (e) => {
                if ((e.key === "Delete" || e.key === "Backspace") && this.selected >= 0) {
                    e.preventDefault();
                    this.remove(this.selected);
                }
            });
            this.list = el("div", {class: "mrgd-regions"});
            this.options = el("div", {class: "mrgd-options"});
            this.io = el("textarea", {class: "mrgd-io", rows: "6", placeholder: "edit spec JSON"});
            const button = (label, cls, fn) => {
                const b = el("button", {type: "button", class: "mrgd-button " + cls, text: label});
                b.addEventListener("click", fn);
                return b;
            };
            const ioBox = el("div", {class: "mrgd-iobox"}, [this.io,
                el("div", {class: "mrgd-row"}, [
                    button("Export spec", "mrgd-export", () => this.exportSpec()),
                    button("Import spec", "mrgd-import", () => this.importSpec()),
                ])]);
            this.ioError = el("div", {class: "mrgd-error"});
            this.root.appendChild(el("div", {class: "mrgd-panel"}, [
                el("div", {class: "mrgd-row mrgd-head"}, [
                    el("label", {class: "mrgd-enable-label"}, [this.enable, el("span", {text: " Enable"})]),
                    el("span", {class: "mrgd-hint", text: "drag on the canvas to add a box; drag a box to move it, its handles to resize; Delete removes the selected box"}),
                    button("Clear boxes", "mrgd-clear", () => {
                        this.spec.regions = [];
                        this.selected = -1;
                        this.changed();
                    }),
                ]),
                el("div", {class: "mrgd-row mrgd-prompts"}, [
                    el("label", {class: "mrgd-common-label", title: "on: the main prompt (and negative) is prepended to every region's prompts and the Background field is r_bg's own prompt; off: the main prompt is the background prompt"},
                        [this.common, el("span", {text: " main prompt applies to every region"})]),
                    this.background,
                ]),
                el("div", {class: "mrgd-stage"}, [this.canvas]),
                this.list,
                el("details", {class: "mrgd-advanced"}, [el("summary", {text: "Advanced"}), this.options]),
                el("details", {class: "mrgd-spec-io"}, [el("summary", {text: "Import / export"}), ioBox, this.ioError]),
            ]));
            this.buildOptions();
        }

        buildOptions() {
            this.optionInputs = {};
            for (const [key, value] of Object.entries(this.defaults)) {
                let input;
                if (typeof value === "boolean") {
                    input = el("input", {type: "checkbox", "data-option": key});
                    input.addEventListener("change", () => {
                        this.spec.options[key] = input.checked;
                        this.write();
                    });
                } else if (typeof value === "number") {
                    input = el("input", {type: "number", step: "any", "data-option": key});
                    input.addEventListener("input", () => {
                        const v = parseFloat(input.value);
                        if (!Number.isNaN(v)) {
                            this.spec.options[key] = v;
                            this.write();
                        }
                    });
                } else {
                    input = el("input", {type: "text", "data-option": key});
                    input.addEventListener("input", () => {
                        const parts = input.value.split(",").map((s) => s.trim()).filter((s) => s.length);
                        const numeric = (this.defaults[key] || []).every((v) => typeof v === "number");
                        this.spec.options[key] = numeric ? parts.map(Number) : parts;
                        this.write();
                    });
                }
                this.optionInputs[key] = input;
                const [label, help] = this.optionText[key] || [key, ""];
                input.setAttribute("aria-label", label);
                this.options.appendChild(el("label", {class: "mrgd-option", title: `${help} (${key})`},
                    [el("span", {class: "mrgd-option-name", text: label}), input]));
            }
        }

        // -- drawing -------------------------------------------------------------------------

        render() {
            const [w, h] = this.bridge.size();
            this.canvas.style.aspectRatio = `${w} / ${h}`;
            this.canvas.dataset.size = `${w}x${h}`;
            if (this.tab === "img2img") {
                const src = this.bridge.initImage();
                this.canvas.style.backgroundImage = src ? `url("${src}")` : "";
            }
            this.enable.checked = this.spec.enabled !== false;
            this.showState();
            this.common.checked = this.spec.main_prompt_common !== false;
            this.background.value = this.spec.background || "";
            this.background.style.display = this.common.checked ? "" : "none";
            this.canvas.querySelectorAll(".mrgd-box").forEach((b) => b.remove());
            this.spec.regions.forEach((r, i) => this.canvas.appendChild(this.boxElement(r, i)));
            this.renderList();
            for (const [key, input] of Object.entries(this.optionInputs)) {
                const v = this.spec.options[key];
                if (input.type === "checkbox") input.checked = !!v;
                else if (Array.isArray(v)) input.value = v.join(", ");
                else input.value = v;
            }
        }

        boxElement(r, i) {
            const [x, y, w, h] = r.box;
            const color = COLORS[i % COLORS.length];
            const box = el("div", {class: "mrgd-box" + (i === this.selected ? " mrgd-selected" : ""), "data-index": String(i)});
            Object.assign(box.style, {left: `${x * 100}%`, top: `${y * 100}%`, width: `${w * 100}%`,
                height: `${h * 100}%`, borderColor: color, backgroundColor: color + "33"});
            box.appendChild(el("span", {class: "mrgd-box-label", text: `${i + 1} ${this.model.label(this.model.kind(r))}`}));
            for (const hnd of HANDLES) {
                const handle = el("div", {class: `mrgd-handle mrgd-handle-${hnd}`, "data-handle": hnd});
                handle.style.backgroundColor = color;
                box.appendChild(handle);
            }
            return box;
        }

        // the collapsed accordion says whether MRGD is on, as Hires. fix and Refiner do
        showState() {
            const head = this.bridge.accordionHead();
            if (!head) return;
            let badge = head.querySelector(".mrgd-state");
            if (!badge) {
                badge = el("span", {class: "mrgd-state"});
                const title = head.querySelector("span");
                if (title) title.after(badge);
                else head.appendChild(badge);
            }
            const on = this.spec.enabled !== false;
            badge.textContent = on ? `✓ on, ${this.spec.regions.length} region${this.spec.regions.length === 1 ? "" : "s"}` : "";
            badge.classList.toggle("mrgd-state-on", on);
        }

        renderList() {
            this.list.replaceChildren();
            if (this.spec.regions.length) {
                this.list.appendChild(el("div", {class: "mrgd-grid mrgd-region-head"},
                    COLUMNS.map(([cls, header, , help]) => el("span", {class: `mrgd-col-${cls}`, text: header, title: help}))));
            }
            const column = Object.fromEntries(COLUMNS.map((c) => [c[0], c]));
            this.spec.regions.forEach((r, i) => {
                const color = COLORS[i % COLORS.length];
                const kind = this.model.kind(r);
                const input = (name, value, type) => {
                    const [, header, placeholder, help] = column[name];
                    const node = el("input", {type: type || "text", class: `mrgd-${name} mrgd-col-${name}`,
                        placeholder: placeholder, title: help, "aria-label": `region ${i + 1} ${header}`});
                    node.value = value;
                    if (type === "number") Object.assign(node, {min: "0", max: "1", step: "0.05"});
                    node.addEventListener("input", () => {
                        if (name === "keywords") r.keywords = node.value.split(",").map((s) => s.trim()).filter((s) => s);
                        else if (name === "feather") r.feather = clamp(parseFloat(node.value) || 0, 0, 1);
                        else r[name] = node.value;
                        const badge = row.querySelector(".mrgd-badge");
                        const k = this.model.kind(r);
                        badge.textContent = this.model.label(k);
                        badge.className = `mrgd-badge mrgd-badge-${k} mrgd-col-kind`;
                        const label = this.canvas.querySelector(`.mrgd-box[data-index="${i}"] .mrgd-box-label`);
                        if (label) label.textContent = `${i + 1} ${this.model.label(k)}`;
                        this.write();
                    });
                    node.addEventListener("focus", () => this.select(i, false));
                    return node;
                };
                const remove = el("button", {type: "button", class: "mrgd-delete mrgd-col-delete", title: "delete this region", text: "×"});
                remove.addEventListener("click", () => this.remove(i));
                const row = el("div", {class: "mrgd-grid mrgd-region" + (i === this.selected ? " mrgd-selected" : ""), "data-index": String(i)}, [
                    el("span", {class: "mrgd-swatch mrgd-col-num", text: String(i + 1)}),
                    el("span", {class: `mrgd-badge mrgd-badge-${kind} mrgd-col-kind`, text: this.model.label(kind)}),
                    input("source", r.source || ""),
                    input("target", r.target || ""),
                    input("keywords", (r.keywords || []).join(", ")),
                    input("feather", r.feather === undefined ? 0.2 : r.feather, "number"),
                    input("negative", r.negative || ""),
                    remove,
                ]);
                row.querySelector(".mrgd-swatch").style.backgroundColor = color;
                this.list.appendChild(row);
            });
        }

        select(i, redraw = true) {
            this.selected = i;
            if (redraw) this.render();
            else {
                this.canvas.querySelectorAll(".mrgd-box").forEach((b) => b.classList.toggle("mrgd-selected", +b.dataset.index === i));
                this.list.querySelectorAll(".mrgd-region").forEach((b) => b.classList.toggle("mrgd-selected", +b.dataset.index === i));
            }
        }

        remove(i) {
            this.spec.regions.splice(i, 1);
            this.selected = -1;
            this.changed();
        }

        // -- mouse ---------------------------------------------------------------------------

        point(e) {
            const rect = this.canvas.getBoundingClientRect();
            return [clamp((e.clientX - rect.left) / rect.width, 0, 1), clamp((e.clientY - rect.top) / rect.height, 0, 1)];
        }

        onDown(e) {
            if (e.button !== 0) return;
            e.preventDefault();
            this.canvas.focus();
            const [px, py] = this.point(e);
            const handle = e.target.closest(".mrgd-handle");
            const boxNode = e.target.closest(".mrgd-box");
            if (boxNode) {
                const i = +boxNode.dataset.index;
                this.select(i, false);
                this.drag = {mode: handle ? handle.dataset.handle : "move", index: i, start: [px, py],
                    box: this.spec.regions[i].box.slice()};
            } else {
                if (!this.model.canAdd(this.spec)) return;
                this.drag = {mode: "create", index: -1, start: [px, py]};
            }
            const move = (ev) => this.onMove(ev);
            const up = (ev) => {
                document.removeEventListener("pointermove", move);
                document.removeEventListener("pointerup", up);
                this.onUp(ev);
            };
            document.addEventListener("pointermove", move);
            document.addEventListener("pointerup", up);
        }

        onMove(e) {
            const d = this.drag;
            if (!d) return;
            const [px, py] = this.point(e);
            if (d.mode === "create") {
                const [sx, sy] = d.start;
                if (d.index < 0) {
                    if (Math.abs(px - sx) < MIN_SIZE && Math.abs(py - sy) < MIN_SIZE) return;
                    this.spec.regions.push(this.model.region([sx, sy, 0, 0]));
                    d.index = this.spec.regions.length - 1;
                    this.selected = d.index;
                }
                this.spec.regions[d.index].box = [Math.min(sx, px), Math.min(sy, py), Math.abs(px - sx), Math.abs(py - sy)];
            } else if (d.mode === "move") {
                const [x, y, w, h] = d.box;
                this.spec.regions[d.index].box = [clamp(x + px - d.start[0], 0, 1 - w), clamp(y + py - d.start[1], 0, 1 - h), w, h];
            } else {
                let [x0, y0, w, h] = d.box;
                let x1 = x0 + w, y1 = y0 + h;
                const dx = px - d.start[0], dy = py - d.start[1];
                if (d.mode.includes("w")) x0 = clamp(x0 + dx, 0, x1 - MIN_SIZE);
                if (d.mode.includes("e")) x1 = clamp(x1 + dx, x0 + MIN_SIZE, 1);
                if (d.mode.includes("n")) y0 = clamp(y0 + dy, 0, y1 - MIN_SIZE);
                if (d.mode.includes("s")) y1 = clamp(y1 + dy, y0 + MIN_SIZE, 1);
                this.spec.regions[d.index].box = [x0, y0, x1 - x0, y1 - y0];
            }
            this.redrawBox(d.index);
        }

        redrawBox(i) {
            const old = this.canvas.querySelector(`.mrgd-box[data-index="${i}"]`);
            const fresh = this.boxElement(this.spec.regions[i], i);
            if (old) old.replaceWith(fresh);
            else this.canvas.appendChild(fresh);
        }

        onUp() {
            const d = this.drag;
            this.drag = null;
            if (!d || d.index < 0) return;
            const r = this.spec.regions[d.index];
            if (d.mode === "create" && (r.box[2] < MIN_SIZE || r.box[3] < MIN_SIZE)) {
                this.spec.regions.splice(d.index, 1);
                this.selected = -1;
            }
            if (this.spec.regions.length && !this.spec.enabled && d.mode === "create") this.spec.enabled = true;
            this.changed();
        }

        // -- the spec field ------------------------------------------------------------------

        normalized() {
            return this.model.normalized(this.spec);
        }

        changed() {
            this.render();
            this.write();
        }

        write() {
            const json = JSON.stringify(this.normalized());
            this.lastSeen = json;
            this.bridge.write(json);
        }

        load(text, pasted = false) {
            const got = this.model.parse(text, this.spec, pasted);
            if (got.error) {
                this.ioError.textContent = got.error;
                return false;
            }
            this.ioError.textContent = "";
            if (got.off) { // a pasted infotext without MRGD: off, boxes kept
                this.spec.enabled = false;
            } else {
                this.spec = got.spec;
                this.selected = -1;
            }
            this.render();
            return true;
        }

        // the spec field was set from outside (paste, "Send to", the API's UI state)
        onSpecField() {
            const field = this.bridge.specField();
            if (!field || field.value === this.lastSeen) return;
            this.lastSeen = field.value;
            // written back normalised, so Python reads what the panel shows (e.g. a 0.1 infotext's
            // main prompt as the background)
            if (this.load(field.value, true) && field.value.trim()) this.write();
        }

        onImportResult() {
            const text = this.bridge.importResult();
            if (!text || text === this.lastImport) return;
            this.lastImport = text;
            this.applyImport(JSON.parse(text));
        }

        onSize() {
            const [w, h] = this.bridge.size();
            if (!this.drag && this.canvas.dataset.size !== `${w}x${h}`) this.render();
        }

        exportSpec() {
            const spec = this.normalized();
            const [w, h] = this.bridge.size();
            const [prompt, negative] = this.bridge.mainPrompts();
            // the WebUI's main prompt goes where Generate would put it
            const main = spec.main_prompt_common !== false ? ["common", "common_negative"] : ["background", "negative"];
            const full = {version: 1, width: w, height: h, ...spec, [main[0]]: prompt, [main[1]]: negative};
            this.io.value = JSON.stringify(full, null, 2);
        }

        importSpec() {
            const text = this.io.value;
            let data = null;
            try {
                data = JSON.parse(text);
            } catch (err) {
                data = null;
            }
            if (data && typeof data === "object" && !data.bbox_controls) {
                if (this.load(text)) this.write(); // an mrgd spec
                return;
            }
            // a Tiled Diffusion / MRGD-authors region file or an infotext: the Python importer reads it
            this.ioError.textContent = "importing…";
            if (!this.bridge.runImport(text)) {
                this.ioError.textContent = "not an mrgd spec, and the importer is not available here";
            }
        }

        // the importer's answer: the spec, whose main prompt, size, seed, steps and CFG go into the
        // WebUI's own fields (Generate takes them from there)
        applyImport(answer) {
            if (answer.error) {
                this.ioError.textContent = answer.error;
                return;
            }
            const spec = answer.spec;
            const set = (name, value) => this.bridge.setHostField(name, value);
            set("prompt", spec.common);
            set("neg_prompt", spec.common_negative);
            for (const key of ["width", "height", "seed", "steps", "cfg_scale"]) set(key, spec[key]);
            this.load(JSON.stringify({...spec, enabled: true}));
            this.write();
            this.ioError.textContent = (answer.warnings || []).join("\n");
        }
    }

    function mount() {
        for (const tab of ["txt2img", "img2img"]) {
            const root = app().querySelector(`#${tab}_mrgd_root`);
            if (root && !root.dataset.ready) {
                root.dataset.ready = "1";
                root.mrgdPanel = new Panel(root);
            }
        }
    }

    window.mrgdSpecModel = specModel;
    if (typeof onUiLoaded === "function") onUiLoaded(mount);
    else document.addEventListener("DOMContentLoaded", mount);
})();
