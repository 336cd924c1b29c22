// /docs: Swagger UI over /openapi.json, from this server's own copy of Swagger UI
// (/static/swagger/, app/api/api_docs.py). A file, not an inline script, so the page keeps the
// same Content-Security-Policy as the rest of the server.
/* global SwaggerUIBundle */
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  // Swagger UI would otherwise send the document to validator.swagger.io for a badge.
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  // The key typed on the page (app/static/auth.js keeps it for the tab's session), so "Try it
  // out" works on a server that has one; "Authorize" sets or changes it here.
  onComplete: () => {
    const key = sessionStorage.getItem("imgclass.apiKey");
    if (key) window.ui.preauthorizeApiKey("ApiKey", key);
  },
});
