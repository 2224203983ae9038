// The console's shell: hash routes (so it works at / and /console/ alike, offline), the
// password prompt, and the section views.

import { agentView } from "./agent.js";
import { agentsView, createView } from "./agents.js";
import { api, setToken, token, whenUnauthorized } from "./api.js";
import { errorBox, h, replace } from "./dom.js";
import { runtimeView } from "./runtime.js";

const main = document.getElementById("main");
const login = document.getElementById("login");
const signOut = document.getElementById("sign-out");
let cleanup = null;
let waitingForLogin = null;

function route() {
  const parts = location.hash.replace(/^#\//, "").split("/").filter(Boolean);
  if (parts[0] === "runtime") return { section: "runtime", view: runtimeView, params: {} };
  if (parts[0] === "agents" && parts[1] === "new") return { section: "agents", view: createView, params: {} };
  if (parts[0] === "agents" && parts[1]) {
    return { section: "agents", view: agentView, params: { id: parts[1], tab: parts[2], sub: parts[3] } };
  }
  return { section: "agents", view: agentsView, params: {} };
}

async function show(event) {
  // Routes are "#/..."; any other fragment is a place in the page, not a page.
  if (event && location.hash && !location.hash.startsWith("#/")) return;
  if (cleanup) cleanup();
  cleanup = null;
  const { section, view, params } = route();
  for (const link of document.querySelectorAll("nav [data-section]")) {
    if (link.dataset.section === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = "kelpie-trio console";
  replace(main, h("p", { class: "loading" }, "Loading…"));
  try {
    const result = await view(main, params);
    cleanup = typeof result === "function" ? result : null;
  } catch (error) {
    replace(main, errorBox(error));
  }
  // After a move to another page, focus goes to its heading for keyboard and screen reader
  // users, unless the view put it somewhere on purpose (a search box, the chat input). On
  // the first load it stays at the top, where the skip link is.
  const moved = event && event.type === "hashchange";
  if (moved && !main.contains(document.activeElement)) {
    const heading = main.querySelector("h1");
    if (heading) {
      heading.tabIndex = -1;
      heading.focus();
    }
  }
}

// A 401: ask for the password once, then show the page again.
function askForPassword() {
  if (waitingForLogin) return waitingForLogin;
  setToken("");
  signOut.hidden = true;
  const form = document.getElementById("login-form");
  const field = document.getElementById("login-password");
  const problem = document.getElementById("login-error");
  waitingForLogin = new Promise((resolve) => {
    form.onsubmit = async (event) => {
      event.preventDefault();
      setToken(field.value);
      try {
        await api.get("/v1/agents/", { limit: 1 });
      } catch (error) {
        setToken("");
        problem.hidden = false;
        problem.textContent = error.status === 401 ? "That is not the server's password." : String(error.message);
        field.select();
        return;
      }
      problem.hidden = true;
      field.value = "";
      login.close();
      signOut.hidden = false;
      waitingForLogin = null;
      resolve();
      show();
    };
    // Escape would leave an empty page behind: the password is the only way on.
    login.oncancel = (event) => event.preventDefault();
    if (!login.open) login.showModal();
    field.focus();
  });
  return waitingForLogin;
}

whenUnauthorized(() => { askForPassword(); });

// The skip link moves focus into the page without touching the address (the route).
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});

signOut.addEventListener("click", () => {
  setToken("");
  replace(main);
  askForPassword();
});

async function start() {
  try {
    const health = await api.get("/v1/health/");
    document.getElementById("version").textContent =
      `kelpie-trio ${health.kelpie_trio_version} · Letta API ${health.version}`;
  } catch {
    // The footer is a courtesy; the pages say what is wrong.
  }
  signOut.hidden = !token();
  window.addEventListener("hashchange", show);
  await show();
}

start();
