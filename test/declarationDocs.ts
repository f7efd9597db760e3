/**
 * What the editor shows for each public name, read from built declaration
 * files (`*.d.ts` of the public entries, not `internal/` or `core/`): every
 * exported declaration and every member of an exported interface or class
 * has a doc comment of its own that says something before its tags, names no
 * internal path, tells none of the known untruths, and is `@since` a version
 * that shipped.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import ts from "typescript-5.9" // TypeScript 7 (the build's compiler) has no JavaScript API; 5.9 has

/** Statements that a doc comment once wrongly said, or that a user cannot follow. */
const UNTRUTHS: ReadonlyArray<readonly [RegExp, string]> = [
  [/internal\//, "points at an internal module"],
  [/backed by a `?Ref`?/i, "says MemoryStore is backed by a Ref"],
  [/@since (?!0\.1\.0\b)/, "carries a @since other than 0.1.0 (the first release)"]
]

/** The doc comments attached to `node` (what the editor shows on hover), as source text. */
const docsOf = (node: ts.Node, source: ts.SourceFile): ReadonlyArray<string> =>
  ts.getJSDocCommentsAndTags(node).filter(ts.isJSDoc).map((doc) => source.text.slice(doc.pos, doc.end))

/** The description: the doc's text before its first tag, without the comment's stars. */
const descriptionOf = (doc: string): string =>
  doc.replace(/^\/\*\*|\*\/$/g, "").split("\n").map((line) => line.replace(/^\s*\* ?/, "")).join("\n")
    .split(/^\s*@/m)[0]!.trim()

const isExported = (node: ts.Node): boolean =>
  ts.canHaveModifiers(node) && (ts.getModifiers(node) ?? []).some((m) => m.kind === ts.SyntaxKind.ExportKeyword)

const nameOf = (node: ts.Node): string => {
  if (ts.isVariableStatement(node)) return node.declarationList.declarations.map((d) => d.name.getText()).join(", ")
  const name = (node as { name?: ts.Node }).name
  return name === undefined ? ts.SyntaxKind[node.kind] : name.getText()
}

/** Problems with the doc comments of one declaration file. */
export const declarationFileProblems = (file: string): ReadonlyArray<string> => {
  const source = ts.createSourceFile(file, fs.readFileSync(file, "utf8"), ts.ScriptTarget.ES2022, true)
  const problems: Array<string> = []
  const where = path.basename(file)

  const check = (node: ts.Node, name: string) => {
    const docs = docsOf(node, source)
    if (docs.length === 0) return problems.push(`${where}: ${name} has no doc comment`)
    const doc = docs[docs.length - 1]!
    if (descriptionOf(doc) === "") problems.push(`${where}: ${name}'s doc comment has only tags`)
    if (doc.slice(3).includes("/**")) problems.push(`${where}: ${name}'s doc comment swallowed another one (unclosed comment)`)
    for (const [pattern, what] of UNTRUTHS) if (pattern.test(doc)) problems.push(`${where}: ${name}'s doc ${what}`)
  }

  const checkMembers = (members: ts.NodeArray<ts.Node>, owner: string) => {
    for (const member of members) {
      if (ts.isConstructorDeclaration(member) || ts.isIndexSignatureDeclaration(member)) continue
      const modifiers = ts.canHaveModifiers(member) ? ts.getModifiers(member) ?? [] : []
      if (modifiers.some((m) => m.kind === ts.SyntaxKind.PrivateKeyword)) continue
      const name = (member as { name?: ts.Node }).name?.getText()
      if (name === undefined || name.startsWith("#") || name.startsWith("_")) continue
      check(member, `${owner}.${name}`)
    }
  }

  const visit = (statements: ts.NodeArray<ts.Statement>, owner: string) => {
    for (const statement of statements) {
      if (ts.isExportDeclaration(statement)) {
        // `export * as KvStore from "./KvStore.js"` and `export { delete_ as delete }`
        if (statement.exportClause === undefined) continue
        if (ts.isNamespaceExport(statement.exportClause)) check(statement, `${owner}${statement.exportClause.name.text}`)
        else for (const specifier of statement.exportClause.elements) check(specifier, `${owner}${specifier.name.text}`)
        continue
      }
      if (!isExported(statement)) continue
      const name = `${owner}${nameOf(statement)}`
      check(statement, name)
      if (ts.isInterfaceDeclaration(statement) || ts.isClassDeclaration(statement)) checkMembers(statement.members, name)
      if (ts.isModuleDeclaration(statement) && statement.body !== undefined && ts.isModuleBlock(statement.body)) {
        visit(statement.body.statements, `${name}.`)
      }
    }
  }
  visit(source.statements, "")
  return problems
}

/** Problems in every public entry's declaration file under `dir` (a build's `dist/esm`). */
export const declarationProblems = (dir: string): ReadonlyArray<string> =>
  fs.readdirSync(dir).filter((f) => f.endsWith(".d.ts")).sort().flatMap((f) => declarationFileProblems(path.join(dir, f)))
