export {};
//# sourceMappingURL=redis-policy.spec.d.ts.map