// Placeholder: the PostgreSQL server setup replaces this.
export default function setup() {}
