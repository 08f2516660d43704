export {};
//# sourceMappingURL=shared-data.spec.d.ts.map