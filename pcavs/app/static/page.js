// pcavs's page: the player of a video being made, and Live over WebRTC.
(() => {
  const api = (path) => new URL(path, document.baseURI).href;

  // ------------------------------------------------------------------ the player
  // A job's frames come as a multipart stream of JPEGs (GET v1/videos/ID/frames) with JSON status parts. Slower than
  // real time, each frame is drawn as it arrives; once frames come faster than 25 a second, the video plays at 25 fps
  // against the voice's clock, with its sound.
  const FPS = 25;
  const started = new WeakSet();

  async function* parts(response) {
    const reader = response.body.getReader();
    let buffer = new Uint8Array(0);
    const text = new TextDecoder();
    const find = (bytes, pattern, from) => {
      outer: for (let i = from; i <= bytes.length - pattern.length; i++) {
        for (let j = 0; j < pattern.length; j++) if (bytes[i + j] !== pattern[j]) continue outer;
        return i;
      }
      return -1;
    };
    const blank = new TextEncoder().encode("\r\n\r\n");
    for (;;) {
      const end = find(buffer, blank, 0);
      if (end >= 0) {
        const head = text.decode(buffer.subarray(0, end));
        const headers = {};
        for (const line of head.split("\r\n")) {
          const at = line.indexOf(":");
          if (at > 0) headers[line.slice(0, at).trim().toLowerCase()] = line.slice(at + 1).trim();
        }
        if (head.includes("--pcavs-frame--")) return;
        const length = parseInt(headers["content-length"] || "-1", 10);
        if (length >= 0 && buffer.length >= end + 4 + length) {
          yield { headers, body: buffer.slice(end + 4, end + 4 + length) };
          buffer = buffer.slice(end + 4 + length + 2);
          continue;
        }
      }
      const { value, done } = await reader.read();
      if (done) return;
      const joined = new Uint8Array(buffer.length + value.length);
      joined.set(buffer);
      joined.set(value, buffer.length);
      buffer = joined;
    }
  }

  function describe(s) {
    if (s.status === "queued") return s.position ? `Waiting for the device: ${s.position} ahead` : "Waiting for the device";
    if (s.status === "running" && s.stage === "making frames") return `Making frames: ${s.frames}/${s.total ?? "?"}`;
    if (s.status === "running") return s.stage.charAt(0).toUpperCase() + s.stage.slice(1) + "...";
    if (s.status === "done") return `Done: ${s.frames} frames`;
    if (s.status === "cancelled") return "Stopped";
    return s.error ? `Failed: ${s.error}` : s.status;
  }

  async function play(element) {
    const id = element.dataset.job;
    element.innerHTML = '<canvas class="pcavs-canvas"></canvas><progress max="1" value="0"></progress>' +
      '<div class="pcavs-status">Starting...</div>';
    const canvas = element.querySelector("canvas"), bar = element.querySelector("progress");
    const status = element.querySelector(".pcavs-status");
    const context = canvas.getContext("2d");
    const state = (window.pcavsPlayer = { id, received: 0, shown: 0, playing: false, stalls: 0, sound: null, ended: false,
                                          status: null });
    const jpegs = new Map();
    let newest = -1, drawn = -1, drawing = false, sound = null, arrivals = [];

    const draw = async (index) => {
      if (drawing || index === drawn || !jpegs.has(index)) return;
      drawing = true;
      try {
        const picture = await createImageBitmap(jpegs.get(index));
        if (canvas.width !== picture.width) { canvas.width = picture.width; canvas.height = picture.height; }
        context.drawImage(picture, 0, 0);
        picture.close();
        drawn = index;
        state.shown++;
        if (state.playing) for (const old of jpegs.keys()) if (old < index) jpegs.delete(old);
      } finally {
        drawing = false;
      }
    };
    const tick = () => {
      if (state.playing && sound) {
        const index = Math.floor(sound.currentTime * FPS);
        if (!jpegs.has(index) && !state.ended && !sound.paused) { sound.pause(); state.stalls++; }  // wait for the frame
        if (jpegs.has(index + 1) && sound.paused && !sound.ended) sound.play().catch(() => {});
        draw(index);
      } else if (newest >= 0) {
        draw(newest);
      }
      if (!(state.ended && (!state.playing || (sound && sound.ended)))) requestAnimationFrame(tick);
    };
    const startPlaying = () => {
      // faster than real time with a second in hand: play at 25 fps with the sound, from the start
      sound = state.sound = new Audio(api(`v1/videos/${id}/voice`));
      state.playing = true;
      sound.play().catch(() => { state.playing = false; sound = state.sound = null; });
    };
    requestAnimationFrame(tick);
    try {
      const response = await fetch(api(`v1/videos/${id}/frames`));
      if (!response.ok) { status.textContent = "This video is not available"; return; }
      for await (const part of parts(response)) {
        if (part.headers["content-type"] === "application/json") {
          const s = JSON.parse(new TextDecoder().decode(part.body));
          state.status = s;
          status.textContent = describe(s);
          bar.value = s.progress || 0;
          continue;
        }
        const index = parseInt(part.headers["x-frame-index"], 10);
        const total = parseInt(part.headers["x-frame-total"] || "0", 10);
        jpegs.set(index, new Blob([part.body], { type: "image/jpeg" }));
        newest = Math.max(newest, index);
        state.received++;
        if (total) { bar.value = (index + 1) / total; status.textContent = `Making frames: ${index + 1}/${total}`; }
        arrivals.push(performance.now());
        if (arrivals.length > FPS) arrivals.shift();
        const rate = arrivals.length > 1 ? (arrivals.length - 1) * 1000 / (arrivals.at(-1) - arrivals[0]) : 0;
        if (!state.playing && !sound && newest + 1 >= FPS && rate > FPS * 1.1) startPlaying();
      }
    } catch (error) {
      status.textContent = "The connection to the server was lost";
    } finally {
      state.ended = true;
    }
  }

  // ------------------------------------------------------------------ Live
  // The microphone goes to the server as a WebRTC audio track; the face comes back as a video track. With the probe,
  // a frame's bottom-right square is white while its own voice is loud: a click heard in the microphone (here, by an
  // analyser on the same track) is timed to the first lit frame on screen (requestVideoFrameCallback).
  const live = (window.pcavsLive = { running: false, latencies: [], shown: 0, figures: null, error: null });

  function quantile(values, q) {
    if (!values.length) return null;
    const sorted = [...values].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  }

  async function startLive() {
    if (live.running) return;
    const root = document.querySelector("#live_ui");
    const video = root.querySelector("video"), figures = root.querySelector(".pcavs-live-figures");
    Object.assign(live, { running: true, latencies: [], shown: 0, sounds: 0, lit: 0, figures: null, error: null, session: null });
    const probe = root.querySelector(".pcavs-probe input")?.checked ?? true;
    const avatar = document.querySelector("#live_avatar textarea, #live_avatar input")?.value || null;
    let microphone;
    try {
      microphone = await navigator.mediaDevices.getUserMedia(
        { audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
    } catch (error) {
      figures.textContent = "The page may not use the microphone: allow it and press Record again.";
      live.running = false;
      return;
    }
    const peer = new RTCPeerConnection({ iceServers: window.pcavsIceServers || [] });
    live.peer = peer;
    live.microphone = microphone;
    for (const track of microphone.getAudioTracks()) peer.addTrack(track, microphone);
    peer.addTransceiver("video", { direction: "recvonly" });

    // clicks in the microphone, as the page hears them
    const listening = new AudioContext();
    const analyser = listening.createAnalyser();
    analyser.fftSize = 2048;  // the last 43 ms at 48 kHz: a click is caught even when a look comes late
    listening.createMediaStreamSource(microphone).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const clicks = [];
    let loud = false;
    live.listen = setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      let peak = 0;
      for (const s of samples) peak = Math.max(peak, Math.abs(s));
      if (peak > 0.25 && !loud) {  // the click's time: where it starts among the samples heard
        const at = samples.findIndex((s) => Math.abs(s) > 0.25);
        clicks.push(performance.now() - ((samples.length - at) / listening.sampleRate) * 1000);
        live.sounds++;
      }
      loud = peak > 0.1 ? loud || peak > 0.25 : false;
    }, 4);

    // frames on screen
    const sample = document.createElement("canvas");
    sample.width = sample.height = 1;
    const sampler = sample.getContext("2d", { willReadFrequently: true });
    let lit = false;
    peer.ontrack = (event) => {
      if (event.track.kind !== "video") return;
      if ("jitterBufferTarget" in event.receiver) event.receiver.jitterBufferTarget = 0;  // show each frame as it comes
      video.srcObject = new MediaStream([event.track]);
      const onFrame = (now) => {
        live.shown++;
        live.shownTimes = (live.shownTimes || []).concat([now]).filter((t) => now - t < 5000);
        if (probe && video.videoWidth) {
          sampler.drawImage(video, video.videoWidth - 8, video.videoHeight - 8, 4, 4, 0, 0, 1, 1);
          const bright = sampler.getImageData(0, 0, 1, 1).data[0] > 128;
          if (bright && !lit) {
            live.lit++;
            const heard = clicks.filter((t) => t <= now && now - t < 3000).pop();
            if (heard !== undefined) { live.latencies.push((now - heard) / 1000); clicks.splice(0, clicks.indexOf(heard) + 1); }
          }
          lit = bright;
        }
        if (live.running) video.requestVideoFrameCallback(onFrame);
      };
      video.requestVideoFrameCallback(onFrame);
    };

    await peer.setLocalDescription(await peer.createOffer());
    await new Promise((done) => {
      if (peer.iceGatheringState === "complete") return done();
      peer.addEventListener("icegatheringstatechange", () => peer.iceGatheringState === "complete" && done());
      setTimeout(done, 2000);
    });
    const response = await fetch(api("live/offer"), {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: peer.localDescription.sdp, type: "offer", avatar, probe }),
    });
    const answer = await response.json();
    if (!response.ok) {
      figures.textContent = answer.error || "The server refused the recording";
      live.error = answer.error;
      stopLive();
      return;
    }
    live.session = answer.session;
    await peer.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    live.poll = setInterval(async () => {
      if (!live.session) return;
      const reply = await fetch(api(`live/${live.session}`)).catch(() => null);
      if (!reply || !reply.ok) return;
      const f = (live.figures = await reply.json());
      const times = live.shownTimes || [];
      const shownFps = times.length > 1 ? (times.length - 1) * 1000 / (times.at(-1) - times[0]) : 0;
      live.shownFps = shownFps;
      const median = quantile(live.latencies, 0.5), p95 = quantile(live.latencies, 0.95);
      const lines = [];
      if (f.status === "waiting") lines.push(`Waiting for the device${f.position ? `: ${f.position} ahead` : ""}...`);
      if (f.status === "failed") lines.push(`Stopped: ${f.error}`);
      if (f.status === "live" || f.status === "ended") {
        lines.push(median === null ? "latency: make a sharp sound (a clap) to measure it" :
          `latency ${median.toFixed(2)} s (p95 ${p95.toFixed(2)} s), sound to face; a frame takes ${f.work.toFixed(2)} s to make`);
        lines.push(`${shownFps.toFixed(1)} fps shown, ${f.made_fps.toFixed(1)} fps made, ${f.dropped} frames dropped`);
      }
      figures.textContent = lines.join(" · ");
    }, 500);
  }

  async function stopLive() {
    clearInterval(live.listen);
    clearInterval(live.poll);
    if (live.session) await fetch(api(`live/${live.session}`), { method: "DELETE" }).catch(() => {});
    live.peer?.close();
    live.microphone?.getTracks().forEach((t) => t.stop());
    live.running = false;
  }

  document.addEventListener("click", (event) => {
    if (event.target.closest("#live_record")) startLive();
    if (event.target.closest("#live_stop")) stopLive();
  });
  new MutationObserver(() => {
    document.querySelectorAll(".pcavs-player[data-job]").forEach((element) => {
      if (!started.has(element)) { started.add(element); play(element); }
    });
  }).observe(document.documentElement, { subtree: true, childList: true });
})();
