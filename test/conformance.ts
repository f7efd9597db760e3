export * from "../src/conformance.js"
