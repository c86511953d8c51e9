// ESLint's configuration for bulk's in-page scripts (bulk/_capture/js/*.js).
//
// Each file is one expression that Playwright evaluates in a page: a function
// (called with its argument) or a function called at once (init.js). It runs in
// the browser as a classic script, so browser globals only, no modules.
import js from "@eslint/js";
import globals from "globals";

export default [
  {
    files: ["**/*.js"],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "script",
      globals: { ...globals.browser },
    },
    linterOptions: { reportUnusedDisableDirectives: "error" },
    rules: {
      ...js.configs.recommended.rules,
      // A failed optional step (a font API, a property that will not redefine) is ignored on purpose.
      "no-empty": ["error", { allowEmptyCatch: true }],
      "no-unused-vars": ["error", { caughtErrors: "none" }],
      "no-restricted-syntax": [
        "error",
        {
          selector: "Program > :not(ExpressionStatement)",
          message: "An in-page script is one expression: a function, or a function called at once.",
        },
        {
          selector: "Program > ExpressionStatement ~ *",
          message: "An in-page script is one expression: a function, or a function called at once.",
        },
        {
          selector:
            "Program > ExpressionStatement > :not(ArrowFunctionExpression, FunctionExpression, CallExpression)",
          message: "An in-page script is one expression: a function, or a function called at once.",
        },
        {
          selector:
            "Program > ExpressionStatement > CallExpression:not([callee.type=/^(Arrow)?FunctionExpression$/])",
          message: "An in-page script is one expression: a function, or a function called at once.",
        },
      ],
    },
  },
];
