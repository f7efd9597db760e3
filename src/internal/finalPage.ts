/**
 * How a driver of this package tells the front that a page of
 * `Driver.entriesPage` is the last one. With a `maxBytes` bound a page may end
 * short of `limit` because the next entry would pass the bound, so a short
 * page alone does not prove the end: without this mark (any other driver)
 * the front asks for one more page, which comes back empty at the end.
 */
const finalPages = new WeakSet<object>()

/** Marks `page` as the last one: no live entry follows it in the range. */
export const markFinal = <A extends object>(page: A): A => {
  finalPages.add(page)
  return page
}

export const isFinal = (page: object): boolean => finalPages.has(page)
