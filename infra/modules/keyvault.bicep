// Key Vault holding the GitHub token the github_dispatch stage dispatches the training workflow with.
// The app setting AL_GITHUB_TOKEN is a Key Vault reference resolved by the platform with the apps'
// user-assigned identity, which may only read secrets (Key Vault Secrets User).

param name string
param location string
param tags object = {}
param appPrincipalId string

@secure()
@description('GitHub token with actions:write on the training repository; empty: set the secret later.')
param githubToken string = ''

param secretName string = 'github-token'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    publicNetworkAccess: 'Enabled'
  }
}

// Created only when a token is given: an empty secret would overwrite one set by hand.
resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(githubToken)) {
  parent: vault
  name: secretName
  properties: { value: githubToken, contentType: 'GitHub token (actions:write)' }
}

var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: vault
  name: guid(vault.id, appPrincipalId, keyVaultSecretsUser)
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

output name string = vault.name
// Versionless: the reference follows secret rotation.
output githubTokenSecretUri string = '${vault.properties.vaultUri}secrets/${secretName}'
