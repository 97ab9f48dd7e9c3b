// Multi-Region Guided Diffusion: the region canvas.
//
// The whole state is the edit spec, kept as JSON in one hidden textbox (#<tab>_mrgd_spec) and
// written with the WebUI's updateInput so Python sees it. When that textbox changes from outside
// (pasted infotext, "Send to"), the panel redraws from it. Boxes are [x, y, w, h] fractions.
(function () {
    "use strict";

    const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#2bb5c9", "#f032e6", "#9bbd20",
        "#e88aa0", "#469990", "#a77fd6", "#9a6324", "#c9b800", "#800000", "#3fa07a", "#808000"];
    const MIN_SIZE = 0.02; // smallest box, as a fraction of the canvas side
    const HANDLES = ["nw", "n", "ne", "e", "se", "s", "sw", "w"];
    const BADGES = {keep: "keep", add: "add", remove: "remove", change: "change", empty: "no prompt"};
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

    function regionKind(r) {
        const s = (r.source || "").trim(), t = (r.target || "").trim();
        if (!s && !t) return "empty";
        if (!s) return "add";
        if (!t) return "remove";
        return s === t ? "keep" : "change";
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

    class Panel {
        constructor(root) {
            this.root = root;
            this.tab = root.dataset.tab;
            const defaults = JSON.parse(root.dataset.defaults);
            this.defaults = defaults.options;
            this.optionText = defaults.option_text || {};
            this.maxRegions = defaults.max_regions;
            this.spec = this.blank();
            this.selected = -1;
            this.lastSeen = "";
            this.lastImport = "";
            this.drag = null;
            this.build();
            this.render();
            setInterval(() => this.sync(), 300);
        }

        blank() {
            return {version: 1, enabled: false, main_prompt_common: true, background: "", regions: [],
                options: JSON.parse(JSON.stringify(this.defaults))};
        }

        field() {
            return app().querySelector(`#${this.tab}_mrgd_spec textarea`);
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

        size() {
            const read = (name) => {
                const input = app().querySelector(`#${this.tab}_${name} input[type=number]`);
                const v = input ? parseFloat(input.value) : NaN;
                return Number.isNaN(v) || v <= 0 ? 512 : v;
            };
            return [read("width"), read("height")];
        }

        render() {
            const [w, h] = this.size();
            this.canvas.style.aspectRatio = `${w} / ${h}`;
            this.canvas.dataset.size = `${w}x${h}`;
            if (this.tab === "img2img") {
                const img = app().querySelector("#img2img_image img");
                this.canvas.style.backgroundImage = img && img.src ? `url("${img.src}")` : "";
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
            box.appendChild(el("span", {class: "mrgd-box-label", text: `${i + 1} ${BADGES[regionKind(r)]}`}));
            for (const hnd of HANDLES) {
                const handle = el("div", {class: `mrgd-handle mrgd-handle-${hnd}`, "data-handle": hnd});
                handle.style.backgroundColor = color;
                box.appendChild(handle);
            }
            return box;
        }

        // the collapsed accordion says whether MRGD is on, as Hires. fix and Refiner do
        showState() {
            const head = app().querySelector(`#${this.tab}_mrgd .label-wrap`) || app().querySelector(`#${this.tab}_mrgd > button`);
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
                const kind = regionKind(r);
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
                        const k = regionKind(r);
                        badge.textContent = BADGES[k];
                        badge.className = `mrgd-badge mrgd-badge-${k} mrgd-col-kind`;
                        const label = this.canvas.querySelector(`.mrgd-box[data-index="${i}"] .mrgd-box-label`);
                        if (label) label.textContent = `${i + 1} ${BADGES[k]}`;
                        this.write();
                    });
                    node.addEventListener("focus", () => this.select(i, false));
                    return node;
                };
                const remove = el("button", {type: "button", class: "mrgd-delete mrgd-col-delete", title: "delete this region", text: "×"});
                remove.addEventListener("click", () => this.remove(i));
                const row = el("div", {class: "mrgd-grid mrgd-region" + (i === this.selected ? " mrgd-selected" : ""), "data-index": String(i)}, [
                    el("span", {class: "mrgd-swatch mrgd-col-num", text: String(i + 1)}),
                    el("span", {class: `mrgd-badge mrgd-badge-${kind} mrgd-col-kind`, text: BADGES[kind]}),
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
                if (this.spec.regions.length >= this.maxRegions) return;
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
                    this.spec.regions.push({box: [sx, sy, 0, 0], source: "", target: "", keywords: [], feather: 0.2, negative: ""});
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
            const spec = JSON.parse(JSON.stringify(this.spec));
            for (const r of spec.regions) r.box = r.box.map(round4);
            return spec;
        }

        changed() {
            this.render();
            this.write();
        }

        write() {
            const field = this.field();
            if (!field) return;
            const json = JSON.stringify(this.normalized());
            field.value = json;
            this.lastSeen = json;
            if (typeof updateInput === "function") updateInput(field);
        }

        // pasted: the text came from an infotext; one written before the common prompt existed
        // (no main_prompt_common) had the main prompt as its background
        load(text, pasted = false) {
            if (!text || !text.trim()) {
                this.spec = this.blank();
            } else {
                let data;
                try {
                    data = JSON.parse(text);
                } catch (err) {
                    this.ioError.textContent = `not JSON: ${err.message}`;
                    return false;
                }
                if (typeof data === "string") data = JSON.parse(data); // an infotext value quoted twice
                if (data.keep_regions === true) { // a pasted infotext without MRGD: off, boxes kept
                    this.spec.enabled = false;
                    this.ioError.textContent = "";
                    this.render();
                    return true;
                }
                let common = data.main_prompt_common;
                if (typeof common !== "boolean") common = pasted ? false : this.spec.main_prompt_common !== false;
                this.spec = {
                    ...data, version: data.version || 1, enabled: data.enabled !== false, main_prompt_common: common,
                    regions: (data.regions || []).map((r) => ({source: "", target: "", keywords: [], feather: 0.2, negative: "", ...r})),
                    options: {...JSON.parse(JSON.stringify(this.defaults)), ...(data.options || {})},
                };
            }
            this.ioError.textContent = "";
            this.selected = -1;
            this.render();
            return true;
        }

        sync() {
            const field = this.field();
            if (field && field.value !== this.lastSeen) {
                this.lastSeen = field.value;
                // written back normalised, so Python reads what the panel shows (e.g. a 0.1 infotext's
                // main prompt as the background)
                if (this.load(field.value, true) && field.value.trim()) this.write();
            }
            const imported = app().querySelector(`#${this.tab}_mrgd_import_result textarea`);
            if (imported && imported.value && imported.value !== this.lastImport) {
                this.lastImport = imported.value;
                this.applyImport(JSON.parse(imported.value));
            }
            if (!this.drag) {
                const [w, h] = this.size();
                if (this.canvas.dataset.size !== `${w}x${h}`) this.render();
            }
        }

        exportSpec() {
            const spec = this.normalized();
            const [w, h] = this.size();
            const prompt = app().querySelector(`#${this.tab}_prompt textarea`);
            const negative = app().querySelector(`#${this.tab}_neg_prompt textarea`);
            // the WebUI's main prompt goes where Generate would put it
            const main = spec.main_prompt_common !== false ? ["common", "common_negative"] : ["background", "negative"];
            const full = {version: 1, width: w, height: h, ...spec,
                [main[0]]: prompt ? prompt.value : "", [main[1]]: negative ? negative.value : ""};
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
            const input = app().querySelector(`#${this.tab}_mrgd_import textarea`);
            const run = app().querySelector(`#${this.tab}_mrgd_import_run`);
            if (!input || !run) {
                this.ioError.textContent = "not an mrgd spec, and the importer is not available here";
                return;
            }
            this.ioError.textContent = "importing…";
            input.value = text;
            updateInput(input);
            run.click();
        }

        // the importer's answer: the spec, whose main prompt, size, seed, steps and CFG go into the
        // WebUI's own fields (Generate takes them from there)
        applyImport(answer) {
            if (answer.error) {
                this.ioError.textContent = answer.error;
                return;
            }
            const spec = answer.spec;
            const set = (name, value) => {
                const node = app().querySelector(`#${this.tab}_${name} textarea, #${this.tab}_${name} input[type=number]`);
                if (!node || value === undefined) return;
                node.value = String(value);
                updateInput(node);
            };
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

    if (typeof onUiLoaded === "function") onUiLoaded(mount);
    else document.addEventListener("DOMContentLoaded", mount);
})();
