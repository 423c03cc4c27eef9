(async () => {
  const fit = () => window.google?.colab?.output?.setIframeHeight?.(document.documentElement.scrollHeight, true);
  const area = document.createElement('div');
  const video = document.createElement('video');
  const button = document.createElement('button');
  video.style.display = 'block';
  video.style.maxWidth = '480px';
  button.textContent = 'Take photo';
  area.append(video, button);
  document.body.append(area);
  let stream = null;
  try {
    stream = await navigator.mediaDevices.getUserMedia({video: true});
    video.srcObject = stream;
    await video.play();
    fit();
    await new Promise((resolve) => { button.onclick = resolve; });
    const canvas = document.createElement('canvas');
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext('2d').drawImage(video, 0, 0);
    return canvas.toDataURL('image/jpeg', 0.95);
  } finally {
    if (stream) stream.getTracks().forEach((track) => track.stop());
    area.remove();
  }
})()
