/* The labelling site of `clis annotate build`.
 *
 * Data comes from data.js (window.CLIS_ANNOTATE); labels live in localStorage under keys that
 * start with "clis-annotate:<site id>", one set per annotator, so two sites (or two people on
 * one browser) never mix. Every user string reaches the page through textContent; boxes are
 * placed through element.style (CSSOM), which the page's CSP (style-src 'self') allows.
 */
(function () {
  "use strict";

  var DATA = window.CLIS_ANNOTATE;
  var FORMAT = "clis.labels/1";
  var LABELS = ["yes", "partly", "no"];
  var COLOURS = 10;

  function $(id) { return document.getElementById(id); }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function clear(node) {
    while (node.firstChild) { node.removeChild(node.firstChild); }
  }

  var messageTimer = null;
  function say(text, isError) {
    var box = $("message");
    box.textContent = text;
    box.className = isError ? "message error" : "message";
    box.hidden = false;
    if (messageTimer) { clearTimeout(messageTimer); }
    messageTimer = setTimeout(function () { box.hidden = true; }, isError ? 8000 : 3500);
  }

  if (!DATA || !DATA.site || !Array.isArray(DATA.layouts)) {
    document.addEventListener("DOMContentLoaded", function () {
      $("screen").appendChild(el("p", "warn", "data.js is missing or broken: rebuild the site with clis annotate build."));
    });
    return;
  }

  var SITE = DATA.site;
  var LAYOUTS = DATA.layouts;
  var PREFIX = "clis-annotate:" + SITE.id;
  var LAST_ANNOTATOR = "clis-annotate:annotator";

  // ------------------------------------------------------------------ storage

  var storageOk = true;
  function load(key) {
    try {
      var text = window.localStorage.getItem(key);
      return text === null ? null : JSON.parse(text);
    } catch (e) {
      storageOk = false;
      return null;
    }
  }

  function store(key, value) {
    try {
      window.localStorage.setItem(key, JSON.stringify(value));
      return true;
    } catch (e) {
      if (storageOk) { say("Cannot save in this browser's storage: export your labels now.", true); }
      storageOk = false;
      return false;
    }
  }

  function emptyLabels() { return { objects: {}, layouts: {} }; }

  var state = {
    annotator: "",
    labels: emptyLabels(),
    layout: 0,
    cand: 0,
    obj: 0,
    boxes: true,
  };

  function labelsKey(annotator) { return PREFIX + ":labels:" + annotator; }

  function loadLabels(annotator) {
    var saved = load(labelsKey(annotator));
    if (!saved || typeof saved !== "object" || !saved.objects || !saved.layouts) { return emptyLabels(); }
    return saved;
  }

  function saveLabels() {
    if (state.annotator) { store(labelsKey(state.annotator), state.labels); }
  }

  function savePosition() {
    store(PREFIX + ":position", { layout: state.layout, cand: state.cand, obj: state.obj });
  }

  function objectKey(layout, cand, obj) {
    return JSON.stringify([layout.id, layout.candidates[cand].image, layout.objects[obj].id]);
  }

  function answerOf(layout, cand, obj) {
    var entry = state.labels.objects[objectKey(layout, cand, obj)];
    return entry ? entry.label : null;
  }

  function layoutEntry(layout) {
    return state.labels.layouts[layout.id] || { best: null, plausible: null, time: null };
  }

  function now() { return new Date().toISOString(); }

  // ------------------------------------------------------------------ counting

  function layoutCounts(layout) {
    var answered = 0;
    var total = layout.candidates.length * layout.objects.length;
    for (var c = 0; c < layout.candidates.length; c++) {
      for (var o = 0; o < layout.objects.length; o++) {
        if (answerOf(layout, c, o)) { answered++; }
      }
    }
    var entry = layoutEntry(layout);
    return {
      answered: answered,
      total: total,
      done: answered === total && entry.best !== null && entry.plausible !== null,
      started: answered > 0 || entry.best !== null || entry.plausible !== null,
    };
  }

  function updateProgress() {
    var answered = 0, total = 0, done = 0;
    LAYOUTS.forEach(function (layout, i) {
      var counts = layoutCounts(layout);
      answered += counts.answered;
      total += counts.total;
      if (counts.done) { done++; }
      var item = $("layout-items").children[i];
      if (item) {
        item.classList.toggle("done", counts.done);
        item.classList.toggle("started", counts.started && !counts.done);
        item.classList.toggle("current", i === state.layout);
      }
    });
    $("progress").textContent = answered + " / " + total + " objects, " + done + " / " + LAYOUTS.length + " layouts";
  }

  // ------------------------------------------------------------------ drawing

  function scoreText(value) {
    return value === null || value === undefined ? "\u2013" : Number(value).toFixed(1);
  }

  function buildList() {
    var list = $("layout-items");
    clear(list);
    LAYOUTS.forEach(function (layout, i) {
      var item = el("li");
      var button = el("button", "jump");
      button.type = "button";
      button.appendChild(el("span", "mark", ""));
      button.appendChild(el("span", "lid", layout.id));
      button.title = layout.caption || layout.id;
      button.addEventListener("click", function () { goLayout(i); });
      item.appendChild(button);
      list.appendChild(item);
    });
  }

  function answerButtons(container, layout, c, o) {
    var group = el("span", "answer-buttons");
    LABELS.forEach(function (value) {
      var button = el("button", "answer a-" + value, value);
      button.type = "button";
      button.dataset.value = value;
      button.addEventListener("click", function (event) {
        event.stopPropagation();
        setFocus(c, o, false);
        setAnswer(value, false);
      });
      group.appendChild(button);
    });
    container.appendChild(group);
  }

  function drawLayout() {
    var layout = LAYOUTS[state.layout];
    var screen = $("screen");
    clear(screen);
    var head = el("section", "layout-head");
    var title = el("h2");
    title.appendChild(el("span", "count", "Layout " + (state.layout + 1) + " / " + LAYOUTS.length + ": "));
    title.appendChild(el("span", "lid", layout.id));
    head.appendChild(title);
    head.appendChild(el("p", "caption", layout.caption || "(no caption)"));

    var phrases = el("ol", "phrases");
    layout.objects.forEach(function (obj, o) {
      var item = el("li", "obj-c" + (o % COLOURS));
      item.appendChild(el("span", "swatch", ""));
      item.appendChild(el("span", "n", String(o + 1)));
      item.appendChild(el("b", null, obj.label));
      if (obj.phrase && obj.phrase !== obj.label) { item.appendChild(el("span", "phrase", " \u2014 " + obj.phrase)); }
      phrases.appendChild(item);
    });
    head.appendChild(phrases);
    if (layout.relations && layout.relations.length) {
      head.appendChild(el("p", "relations", "Relations: " + layout.relations.join("; ")));
    }

    var questions = el("div", "questions");
    var plausible = el("div", "question plausible");
    plausible.appendChild(el("span", "q", "Is this layout plausible?"));
    [["yes", "a"], ["no", "z"]].forEach(function (pair) {
      var button = el("button", "choice p-" + pair[0], pair[0] + " (" + pair[1] + ")");
      button.type = "button";
      button.dataset.value = pair[0];
      button.addEventListener("click", function () { setPlausible(pair[0]); });
      plausible.appendChild(button);
    });
    questions.appendChild(plausible);
    var best = el("div", "question best");
    best.appendChild(el("span", "q", "Which candidate is best?"));
    layout.candidates.forEach(function (cand, c) {
      var button = el("button", "choice b-" + c, String(c + 1));
      button.type = "button";
      button.dataset.index = String(c);
      button.addEventListener("click", function () { setBest(c); });
      best.appendChild(button);
    });
    questions.appendChild(best);
    head.appendChild(questions);
    screen.appendChild(head);

    var grid = el("section", "cands");
    layout.candidates.forEach(function (cand, c) {
      var card = el("article", "cand");
      card.dataset.index = String(c);
      var h = el("h3");
      h.appendChild(el("span", "num", String(c + 1)));
      h.appendChild(el("span", "best-mark", "best"));
      if (cand.scores) {
        h.appendChild(el("span", "scores", "clis " + scoreText(cand.scores.clis) + " \u00b7 clis_i " + scoreText(cand.scores.clis_i)));
        if (cand.scores.error) { h.appendChild(el("span", "score-error", cand.scores.error)); }
      }
      card.appendChild(h);
      var frame = el("div", "frame");
      var img = el("img");
      img.src = cand.src;
      img.alt = "candidate " + (c + 1);
      if (cand.width && cand.height) { img.width = cand.width; img.height = cand.height; }
      frame.appendChild(img);
      layout.objects.forEach(function (obj, o) {
        var box = el("div", "box obj-c" + (o % COLOURS));
        box.dataset.obj = String(o);
        box.style.left = (obj.bbox[0] * 100) + "%";
        box.style.top = (obj.bbox[1] * 100) + "%";
        box.style.width = (obj.bbox[2] * 100) + "%";
        box.style.height = (obj.bbox[3] * 100) + "%";
        box.appendChild(el("span", "tag", (o + 1) + " " + obj.label));
        box.addEventListener("click", function () { setFocus(c, o, true); });
        frame.appendChild(box);
      });
      card.appendChild(frame);
      var answers = el("ol", "answers");
      layout.objects.forEach(function (obj, o) {
        var item = el("li", "item obj-c" + (o % COLOURS));
        item.dataset.obj = String(o);
        item.tabIndex = -1;
        item.appendChild(el("span", "swatch", ""));
        var name = el("span", "name");
        name.appendChild(el("b", null, (o + 1) + " " + obj.label));
        if (obj.phrase && obj.phrase !== obj.label) { name.appendChild(el("span", "phrase", " " + obj.phrase)); }
        item.appendChild(name);
        if (cand.scores && cand.scores.instances) {
          var value = cand.scores.instances[obj.id];
          item.appendChild(el("span", "score", scoreText(value)));
        }
        answerButtons(item, layout, c, o);
        item.addEventListener("click", function () { setFocus(c, o, false); });
        answers.appendChild(item);
      });
      card.appendChild(answers);
      grid.appendChild(card);
    });
    screen.appendChild(grid);
    screen.classList.toggle("no-boxes", !state.boxes);
    refresh(true);
  }

  // The answered states, the focus and the counters, without rebuilding the screen.
  function refresh(scroll) {
    var layout = LAYOUTS[state.layout];
    var entry = layoutEntry(layout);
    var cards = document.querySelectorAll("#screen .cand");
    cards.forEach(function (card, c) {
      var isBest = entry.best !== null && entry.best === layout.candidates[c].image;
      card.classList.toggle("is-best", isBest);
      card.querySelectorAll(".item").forEach(function (item, o) {
        var answer = answerOf(layout, c, o);
        LABELS.forEach(function (value) { item.classList.toggle("ans-" + value, answer === value); });
        item.querySelectorAll("button.answer").forEach(function (button) {
          button.setAttribute("aria-pressed", button.dataset.value === answer ? "true" : "false");
        });
        var focused = c === state.cand && o === state.obj;
        item.classList.toggle("focused", focused);
        if (focused && scroll) { item.scrollIntoView({ block: "nearest" }); }
      });
      card.querySelectorAll(".box").forEach(function (box, o) {
        box.classList.toggle("focused", c === state.cand && o === state.obj);
      });
      card.classList.toggle("focused", c === state.cand);
    });
    document.querySelectorAll("#screen .plausible button").forEach(function (button) {
      button.setAttribute("aria-pressed", button.dataset.value === entry.plausible ? "true" : "false");
    });
    document.querySelectorAll("#screen .best button").forEach(function (button) {
      var c = Number(button.dataset.index);
      button.setAttribute("aria-pressed", entry.best !== null && layout.candidates[c].image === entry.best ? "true" : "false");
    });
    updateProgress();
  }

  // ------------------------------------------------------------------ actions

  function requireAnnotator() {
    if (state.annotator) { return true; }
    askAnnotator();
    return false;
  }

  function setFocus(c, o, scroll) {
    var layout = LAYOUTS[state.layout];
    state.cand = Math.max(0, Math.min(layout.candidates.length - 1, c));
    state.obj = Math.max(0, Math.min(layout.objects.length - 1, o));
    savePosition();
    refresh(scroll);
  }

  function nextUnanswered() {
    var layout = LAYOUTS[state.layout];
    var n = layout.objects.length, total = layout.candidates.length * n;
    var start = state.cand * n + state.obj;
    for (var step = 1; step <= total; step++) {
      var k = (start + step) % total;
      var c = Math.floor(k / n), o = k % n;
      if (!answerOf(layout, c, o)) { return [c, o]; }
    }
    return null;
  }

  function setAnswer(value, advance) {
    if (!requireAnnotator()) { return; }
    var layout = LAYOUTS[state.layout];
    var key = objectKey(layout, state.cand, state.obj);
    if (value === null) {
      delete state.labels.objects[key];
    } else {
      state.labels.objects[key] = { label: value, time: now() };
    }
    saveLabels();
    if (advance && value !== null) {
      var next = nextUnanswered();
      if (next) { setFocus(next[0], next[1], true); return; }
    }
    refresh(false);
  }

  function setLayoutField(name, value) {
    if (!requireAnnotator()) { return; }
    var layout = LAYOUTS[state.layout];
    var entry = layoutEntry(layout);
    var updated = { best: entry.best, plausible: entry.plausible, time: now() };
    updated[name] = value;
    if (updated.best === null && updated.plausible === null) {
      delete state.labels.layouts[layout.id];
    } else {
      state.labels.layouts[layout.id] = updated;
    }
    saveLabels();
    refresh(false);
  }

  function setBest(c) {
    var layout = LAYOUTS[state.layout];
    if (c < 0 || c >= layout.candidates.length) { return; }
    var image = layout.candidates[c].image;
    setLayoutField("best", layoutEntry(layout).best === image ? null : image);
  }

  function setPlausible(value) { setLayoutField("plausible", value); }

  function moveObject(delta) {
    var layout = LAYOUTS[state.layout];
    var n = layout.objects.length, total = layout.candidates.length * n;
    var k = Math.max(0, Math.min(total - 1, state.cand * n + state.obj + delta));
    setFocus(Math.floor(k / n), k % n, true);
  }

  function goLayout(i) {
    if (i < 0 || i >= LAYOUTS.length) { return; }
    state.layout = i;
    state.cand = 0;
    state.obj = 0;
    var first = nextUnansweredFromStart();
    if (first) { state.cand = first[0]; state.obj = first[1]; }
    savePosition();
    drawLayout();
    window.scrollTo(0, 0);
  }

  function nextUnansweredFromStart() {
    var layout = LAYOUTS[state.layout];
    for (var c = 0; c < layout.candidates.length; c++) {
      for (var o = 0; o < layout.objects.length; o++) {
        if (!answerOf(layout, c, o)) { return [c, o]; }
      }
    }
    return null;
  }

  function goNextOpen() {
    for (var step = 1; step <= LAYOUTS.length; step++) {
      var i = (state.layout + step) % LAYOUTS.length;
      if (!layoutCounts(LAYOUTS[i]).done) { goLayout(i); return; }
    }
    say("Every layout is fully labelled. Export your labels (e).");
  }

  function toggleBoxes() {
    state.boxes = !state.boxes;
    $("screen").classList.toggle("no-boxes", !state.boxes);
  }

  // ------------------------------------------------------------------ annotator

  function setAnnotator(name) {
    name = String(name || "").trim();
    if (!name) { return false; }
    state.annotator = name;
    state.labels = loadLabels(name);
    store(PREFIX + ":annotator", name);
    store(LAST_ANNOTATOR, name);
    $("annotator").value = name;
    return true;
  }

  function askAnnotator() {
    $("ask-annotator").hidden = false;
    $("annotator-first").focus();
  }

  // ------------------------------------------------------------------ export and import

  function exportDocument() {
    var objects = [];
    var layouts = [];
    LAYOUTS.forEach(function (layout) {
      layout.candidates.forEach(function (cand, c) {
        layout.objects.forEach(function (obj, o) {
          var entry = state.labels.objects[objectKey(layout, c, o)];
          if (entry) {
            objects.push({ annotator: state.annotator, layout_id: layout.id, image: cand.image, object_id: obj.id,
                           label: entry.label, time: entry.time });
          }
        });
      });
      var l = state.labels.layouts[layout.id];
      if (l && (l.best !== null || l.plausible !== null)) {
        layouts.push({ annotator: state.annotator, layout_id: layout.id, best: l.best, plausible: l.plausible, time: l.time });
      }
    });
    return { format: FORMAT, site: SITE, annotators: [state.annotator], exported: now(), objects: objects, layouts: layouts };
  }

  function exportLabels() {
    if (!requireAnnotator()) { return; }
    var text = JSON.stringify(exportDocument(), null, 1) + "\n";
    var blob = new Blob([text], { type: "application/json" });
    var url = URL.createObjectURL(blob);
    var link = document.createElement("a");
    link.href = url;
    link.download = "labels-" + state.annotator.replace(/[^A-Za-z0-9_.-]+/g, "_") + "-" + SITE.id.slice(0, 8) + ".json";
    document.body.appendChild(link);
    link.click();
    document.body.removeChild(link);
    setTimeout(function () { URL.revokeObjectURL(url); }, 5000);
    say("Exported " + link.download + ".");
  }

  function knownItems() {
    var objects = {}, layouts = {};
    LAYOUTS.forEach(function (layout) {
      layouts[layout.id] = layout;
      layout.candidates.forEach(function (cand, c) {
        layout.objects.forEach(function (obj, o) { objects[objectKey(layout, c, o)] = true; });
      });
    });
    return { objects: objects, layouts: layouts };
  }

  function importText(text) {
    var doc;
    try { doc = JSON.parse(text); } catch (e) { say("Import: not a JSON file.", true); return; }
    if (!doc || doc.format !== FORMAT) { say("Import: not a " + FORMAT + " file.", true); return; }
    if (!doc.site || doc.site.id !== SITE.id) { say("Import: these labels belong to another site.", true); return; }
    var known = knownItems();
    var count = 0, others = 0;
    (doc.objects || []).forEach(function (r) {
      if (!r || r.annotator !== state.annotator) { others++; return; }
      var key = JSON.stringify([r.layout_id, r.image, r.object_id]);
      if (!known.objects[key] || LABELS.indexOf(r.label) < 0 || typeof r.time !== "string") { return; }
      var mine = state.labels.objects[key];
      if (!mine || mine.time < r.time) { state.labels.objects[key] = { label: r.label, time: r.time }; count++; }
    });
    (doc.layouts || []).forEach(function (r) {
      if (!r || r.annotator !== state.annotator) { others++; return; }
      var layout = known.layouts[r.layout_id];
      if (!layout || typeof r.time !== "string") { return; }
      if (r.best !== null && r.best !== undefined && !layout.candidates.some(function (c) { return c.image === r.best; })) { return; }
      if (r.plausible !== null && r.plausible !== undefined && r.plausible !== "yes" && r.plausible !== "no") { return; }
      var mine = state.labels.layouts[r.layout_id];
      if (!mine || mine.time < r.time) {
        state.labels.layouts[r.layout_id] = { best: r.best === undefined ? null : r.best,
                                              plausible: r.plausible === undefined ? null : r.plausible, time: r.time };
        count++;
      }
    });
    saveLabels();
    drawLayout();
    say("Imported " + count + " answers of " + state.annotator + (others ? " (" + others + " of other annotators skipped)" : "") + ".");
  }

  // ------------------------------------------------------------------ keys

  function toggleHelp(show) {
    var help = $("help");
    help.hidden = show === undefined ? !help.hidden : !show;
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable)) {
      if (event.key === "Escape") { target.blur(); }
      return;
    }
    if (!$("ask-annotator").hidden) { return; }
    var key = event.key;
    if (!$("help").hidden) {
      if (key === "Escape" || key === "?") { toggleHelp(false); event.preventDefault(); }
      return;
    }
    var handled = true;
    switch (key) {
      case "y": setAnswer("yes", true); break;
      case "p": setAnswer("partly", true); break;
      case "n": setAnswer("no", true); break;
      case "x": case "Backspace": case "Delete": setAnswer(null, false); break;
      case "j": case "ArrowDown": moveObject(1); break;
      case "k": case "ArrowUp": moveObject(-1); break;
      case "l": case "ArrowRight": setFocus(state.cand + 1, state.obj, true); break;
      case "h": case "ArrowLeft": setFocus(state.cand - 1, state.obj, true); break;
      case "a": setPlausible("yes"); break;
      case "z": setPlausible("no"); break;
      case "]": case "PageDown": goLayout(state.layout + 1); break;
      case "[": case "PageUp": goLayout(state.layout - 1); break;
      case "u": goNextOpen(); break;
      case "b": toggleBoxes(); break;
      case "e": exportLabels(); break;
      case "?": toggleHelp(); break;
      case "Escape": break;
      default:
        if (key.length === 1 && key >= "1" && key <= "9") { setBest(Number(key) - 1); } else { handled = false; }
    }
    if (handled) { event.preventDefault(); }
  }

  // ------------------------------------------------------------------ start

  function start() {
    buildList();
    var position = load(PREFIX + ":position");
    if (position && typeof position.layout === "number" && position.layout >= 0 && position.layout < LAYOUTS.length) {
      state.layout = position.layout;
      state.cand = position.cand || 0;
      state.obj = position.obj || 0;
    }
    var layout = LAYOUTS[state.layout];
    state.cand = Math.min(Math.max(0, state.cand), layout.candidates.length - 1);
    state.obj = Math.min(Math.max(0, state.obj), layout.objects.length - 1);
    var name = load(PREFIX + ":annotator") || load(LAST_ANNOTATOR);
    if (typeof name === "string" && name.trim()) { setAnnotator(name); }
    drawLayout();

    $("annotator").addEventListener("change", function () {
      var value = $("annotator").value.trim();
      if (!value) { $("annotator").value = state.annotator; return; }
      if (value !== state.annotator) {
        setAnnotator(value);
        drawLayout();
        say("Labelling as " + value + ": labels are kept per annotator.");
      }
    });
    $("annotator-form").addEventListener("submit", function (event) {
      event.preventDefault();
      if (setAnnotator($("annotator-first").value)) {
        $("ask-annotator").hidden = true;
        drawLayout();
      }
    });
    $("prev").addEventListener("click", function () { goLayout(state.layout - 1); });
    $("next").addEventListener("click", function () { goLayout(state.layout + 1); });
    $("next-open").addEventListener("click", goNextOpen);
    $("export").addEventListener("click", exportLabels);
    $("help-button").addEventListener("click", function () { toggleHelp(); });
    $("help-close").addEventListener("click", function () { toggleHelp(false); });
    $("import").addEventListener("change", function () {
      var file = $("import").files[0];
      if (!file) { return; }
      if (!requireAnnotator()) { return; }
      var reader = new FileReader();
      reader.onload = function () { importText(String(reader.result)); $("import").value = ""; };
      reader.onerror = function () { say("Import: cannot read the file.", true); };
      reader.readAsText(file);
    });
    document.addEventListener("keydown", onKey);
    if (!state.annotator) { askAnnotator(); }
    document.body.classList.add("ready");
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
