// The API as the page uses it: JSON requests with the key in the Authorization header, uploads with progress.
// The key lives in this tab's sessionStorage only: it is never put in a URL, a cookie or localStorage.

const KEY_NAME = "hra.apiKey";

export const session = {
  get key() {
    return sessionStorage.getItem(KEY_NAME) || "";
  },
  set key(value) {
    sessionStorage.setItem(KEY_NAME, value);
  },
  clear() {
    sessionStorage.removeItem(KEY_NAME);
  },
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  // Worth trying again by itself: the network, a timeout, throttling, or the service being briefly unavailable.
  get retriable() {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

export function errorFrom(status, body) {
  const error = body && body.error;
  const message = (error && error.message) || `The service answered with status ${status}.`;
  return new ApiError(status, (error && error.code) || `http_${status}`, message);
}

const NETWORK_MESSAGE = "The service cannot be reached. Check the connection and try again.";

function headers(extra = {}) {
  return { Authorization: `Bearer ${session.key}`, Accept: "application/json", ...extra };
}

export async function request(method, path, { json, form, signal } = {}) {
  const init = { method, headers: headers(), signal, cache: "no-store" };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network_error", NETWORK_MESSAGE);
  }
  if (response.status === 204) return null;
  const body = await response.json().catch(() => null);
  if (!response.ok) throw errorFrom(response.status, body);
  return body;
}

export const get = (path, options) => request("GET", path, options);
export const post = (path, json, options = {}) => request("POST", path, { ...options, json });

// POST a multipart form with upload progress (fetch cannot report it): resolves with the JSON body.
// The returned promise has .abort().
export function upload(path, form, onProgress = () => {}) {
  let xhr;
  const promise = new Promise((resolve, reject) => {
    xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [name, value] of Object.entries(headers())) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(1);
        resolve(body);
      } else {
        reject(errorFrom(xhr.status, body));
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network_error", NETWORK_MESSAGE)));
    xhr.addEventListener("timeout", () => reject(new ApiError(0, "network_error", NETWORK_MESSAGE)));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "aborted", "The upload was cancelled.")));
    xhr.send(form);
  });
  promise.abort = () => xhr && xhr.abort();
  return promise;
}
