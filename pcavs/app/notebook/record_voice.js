(async () => {
  const fit = () => window.google?.colab?.output?.setIframeHeight?.(document.documentElement.scrollHeight, true);
  const area = document.createElement('div');
  const button = document.createElement('button');
  const status = document.createElement('span');
  button.textContent = 'Start recording';
  area.append(button, status);
  document.body.append(area);
  fit();
  const clicked = () => new Promise((resolve) => { button.onclick = resolve; });
  let stream = null;
  try {
    await clicked();
    stream = await navigator.mediaDevices.getUserMedia({audio: true});
    const recorder = new MediaRecorder(stream);
    const chunks = [];
    recorder.ondataavailable = (event) => { if (event.data.size) chunks.push(event.data); };
    const stopped = new Promise((resolve) => { recorder.onstop = resolve; });
    recorder.start();
    button.textContent = 'Stop recording';
    status.textContent = ' recording: speak now';
    await clicked();
    recorder.stop();
    await stopped;
    const blob = new Blob(chunks, {type: recorder.mimeType || 'audio/webm'});
    return await new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(blob);
    });
  } finally {
    if (stream) stream.getTracks().forEach((track) => track.stop());
    area.remove();
  }
})()
