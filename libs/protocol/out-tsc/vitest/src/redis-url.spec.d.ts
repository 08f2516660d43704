export {};
//# sourceMappingURL=redis-url.spec.d.ts.map