package sidecar

// SetOpenKeysBudget makes streams whose keys take more than n bytes open following every key
// (tests of that path need no thousands of subscribers); the returned func restores it.
func SetOpenKeysBudget(n int) (restore func()) {
	old := openKeysBudget
	openKeysBudget = n
	return func() { openKeysBudget = old }
}
